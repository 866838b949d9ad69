from google.protobuf import struct_pb2 as _struct_pb2
from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartTrainJobRequest(_message.Message):
    __slots__ = ("base_model_id", "dataset_id", "adapter_name", "config", "tags")
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
    base_model_id: str
    dataset_id: str
    adapter_name: str
    config: _common_pb2.TrainConfig
    tags: _containers.ScalarMap[str, str]
    def __init__(self, base_model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., adapter_name: _Optional[str] = ..., config: _Optional[_Union[_common_pb2.TrainConfig, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartTrainJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainJob
    def __init__(self, job: _Optional[_Union[TrainJob, _Mapping]] = ...) -> None: ...

class TrainJob(_message.Message):
    __slots__ = ("status", "request", "effective_config", "result")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.JobStatus
    request: StartTrainJobRequest
    effective_config: _common_pb2.TrainConfig
    result: TrainResult
    def __init__(self, status: _Optional[_Union[_common_pb2.JobStatus, _Mapping]] = ..., request: _Optional[_Union[StartTrainJobRequest, _Mapping]] = ..., effective_config: _Optional[_Union[_common_pb2.TrainConfig, _Mapping]] = ..., result: _Optional[_Union[TrainResult, _Mapping]] = ...) -> None: ...

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
