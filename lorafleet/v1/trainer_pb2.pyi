from google.protobuf import struct_pb2 as _struct_pb2
from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartTrainJobRequest(_message.Message):
    __slots__ = ("base_model_id", "dataset_id", "adapter_name", "config", "tags", "priority", "request_id", "validate_only", "dataset_path")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    DATASET_PATH_FIELD_NUMBER: _ClassVar[int]
    base_model_id: str
    dataset_id: str
    adapter_name: str
    config: _common_pb2.TrainConfig
    tags: _containers.ScalarMap[str, str]
    priority: int
    request_id: str
    validate_only: bool
    dataset_path: str
    def __init__(self, base_model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., adapter_name: _Optional[str] = ..., config: _Optional[_Union[_common_pb2.TrainConfig, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., request_id: _Optional[str] = ..., validate_only: _Optional[bool] = ..., dataset_path: _Optional[str] = ...) -> None: ...

class StartTrainJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainJob
    def __init__(self, job: _Optional[_Union[TrainJob, _Mapping]] = ...) -> None: ...

class TrainJob(_message.Message):
    __slots__ = ("status", "request", "effective_config", "result", "dataset_report", "attempt", "resumed_from_step", "worker_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DATASET_REPORT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.JobStatus
    request: StartTrainJobRequest
    effective_config: _common_pb2.TrainConfig
    result: TrainResult
    dataset_report: DatasetReport
    attempt: int
    resumed_from_step: int
    worker_id: str
    def __init__(self, status: _Optional[_Union[_common_pb2.JobStatus, _Mapping]] = ..., request: _Optional[_Union[StartTrainJobRequest, _Mapping]] = ..., effective_config: _Optional[_Union[_common_pb2.TrainConfig, _Mapping]] = ..., result: _Optional[_Union[TrainResult, _Mapping]] = ..., dataset_report: _Optional[_Union[DatasetReport, _Mapping]] = ..., attempt: _Optional[int] = ..., resumed_from_step: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ("adapter_id", "metrics", "environment")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    metrics: _containers.ScalarMap[str, float]
    environment: _struct_pb2.Struct
    def __init__(self, adapter_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., environment: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetTrainJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetTrainJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainJob
    def __init__(self, job: _Optional[_Union[TrainJob, _Mapping]] = ...) -> None: ...

class ListTrainJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.JobState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[_common_pb2.JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTrainJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[TrainJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[TrainJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTrainJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelTrainJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainJob
    def __init__(self, job: _Optional[_Union[TrainJob, _Mapping]] = ...) -> None: ...

class WatchTrainJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchTrainJobResponse(_message.Message):
    __slots__ = ("event", "job")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.ProgressEvent
    job: TrainJob
    def __init__(self, event: _Optional[_Union[_common_pb2.ProgressEvent, _Mapping]] = ..., job: _Optional[_Union[TrainJob, _Mapping]] = ...) -> None: ...

class ValidateDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "base_model_id", "max_seq_length", "eval_fraction", "seed", "task_type", "labels")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    base_model_id: str
    max_seq_length: int
    eval_fraction: float
    seed: int
    task_type: _common_pb2.TaskType
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dataset_id: _Optional[str] = ..., base_model_id: _Optional[str] = ..., max_seq_length: _Optional[int] = ..., eval_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidateDatasetResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: DatasetReport
    def __init__(self, report: _Optional[_Union[DatasetReport, _Mapping]] = ...) -> None: ...

class DatasetIssue(_message.Message):
    __slots__ = ("line", "kind", "message", "fatal")
    LINE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FATAL_FIELD_NUMBER: _ClassVar[int]
    line: int
    kind: str
    message: str
    fatal: bool
    def __init__(self, line: _Optional[int] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., fatal: _Optional[bool] = ...) -> None: ...

class DatasetReport(_message.Message):
    __slots__ = ("passed", "summary", "task_type", "row_count", "empty_rows", "duplicate_rows", "over_length_rows", "truncated_tokens", "no_answer_rows", "total_tokens", "max_row_tokens", "train_rows", "eval_rows", "issues", "max_seq_length", "eval_fraction", "seed", "label_counts", "imbalance_ratio")
    class LabelCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PASSED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    EMPTY_ROWS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_ROWS_FIELD_NUMBER: _ClassVar[int]
    OVER_LENGTH_ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NO_ANSWER_ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    EVAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    IMBALANCE_RATIO_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    summary: str
    task_type: _common_pb2.TaskType
    row_count: int
    empty_rows: int
    duplicate_rows: int
    over_length_rows: int
    truncated_tokens: int
    no_answer_rows: int
    total_tokens: int
    max_row_tokens: int
    train_rows: int
    eval_rows: int
    issues: _containers.RepeatedCompositeFieldContainer[DatasetIssue]
    max_seq_length: int
    eval_fraction: float
    seed: int
    label_counts: _containers.ScalarMap[str, int]
    imbalance_ratio: float
    def __init__(self, passed: _Optional[bool] = ..., summary: _Optional[str] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., row_count: _Optional[int] = ..., empty_rows: _Optional[int] = ..., duplicate_rows: _Optional[int] = ..., over_length_rows: _Optional[int] = ..., truncated_tokens: _Optional[int] = ..., no_answer_rows: _Optional[int] = ..., total_tokens: _Optional[int] = ..., max_row_tokens: _Optional[int] = ..., train_rows: _Optional[int] = ..., eval_rows: _Optional[int] = ..., issues: _Optional[_Iterable[_Union[DatasetIssue, _Mapping]]] = ..., max_seq_length: _Optional[int] = ..., eval_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., label_counts: _Optional[_Mapping[str, int]] = ..., imbalance_ratio: _Optional[float] = ...) -> None: ...
