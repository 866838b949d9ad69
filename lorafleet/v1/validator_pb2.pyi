from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartValidationJobRequest(_message.Message):
    __slots__ = ("model_id", "adapter_id", "baseline_model_id", "dataset_id", "gates", "max_examples", "max_new_tokens", "eval_fraction", "seed", "request_id", "mode", "suites", "weights", "thresholds", "deployment", "safety_probe_set_id", "grade_bounds")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SUITES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_PROBE_SET_ID_FIELD_NUMBER: _ClassVar[int]
    GRADE_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    adapter_id: str
    baseline_model_id: str
    dataset_id: str
    gates: _common_pb2.ValidationGates
    max_examples: int
    max_new_tokens: int
    eval_fraction: float
    seed: int
    request_id: str
    mode: str
    suites: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.ScalarMap[str, float]
    thresholds: _containers.ScalarMap[str, float]
    deployment: str
    safety_probe_set_id: str
    grade_bounds: _containers.RepeatedCompositeFieldContainer[_common_pb2.GradeBound]
    def __init__(self, model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., baseline_model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., gates: _Optional[_Union[_common_pb2.ValidationGates, _Mapping]] = ..., max_examples: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., eval_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., request_id: _Optional[str] = ..., mode: _Optional[str] = ..., suites: _Optional[_Iterable[str]] = ..., weights: _Optional[_Mapping[str, float]] = ..., thresholds: _Optional[_Mapping[str, float]] = ..., deployment: _Optional[str] = ..., safety_probe_set_id: _Optional[str] = ..., grade_bounds: _Optional[_Iterable[_Union[_common_pb2.GradeBound, _Mapping]]] = ...) -> None: ...

class StartValidationJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ValidationJob
    def __init__(self, job: _Optional[_Union[ValidationJob, _Mapping]] = ...) -> None: ...

class ValidationJob(_message.Message):
    __slots__ = ("status", "request", "report", "attempt", "worker_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.JobStatus
    request: StartValidationJobRequest
    report: _common_pb2.ValidationReport
    attempt: int
    worker_id: str
    def __init__(self, status: _Optional[_Union[_common_pb2.JobStatus, _Mapping]] = ..., request: _Optional[_Union[StartValidationJobRequest, _Mapping]] = ..., report: _Optional[_Union[_common_pb2.ValidationReport, _Mapping]] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class GetValidationJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetValidationJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ValidationJob
    def __init__(self, job: _Optional[_Union[ValidationJob, _Mapping]] = ...) -> None: ...

class ListValidationJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.JobState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[_common_pb2.JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListValidationJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[ValidationJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[ValidationJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelValidationJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelValidationJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ValidationJob
    def __init__(self, job: _Optional[_Union[ValidationJob, _Mapping]] = ...) -> None: ...

class WatchValidationJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchValidationJobResponse(_message.Message):
    __slots__ = ("event", "job")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.ProgressEvent
    job: ValidationJob
    def __init__(self, event: _Optional[_Union[_common_pb2.ProgressEvent, _Mapping]] = ..., job: _Optional[_Union[ValidationJob, _Mapping]] = ...) -> None: ...
