from google.protobuf import struct_pb2 as _struct_pb2
from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_DTYPE_UNSPECIFIED: _ClassVar[OutputDtype]
    OUTPUT_DTYPE_SAME: _ClassVar[OutputDtype]
    OUTPUT_DTYPE_FLOAT32: _ClassVar[OutputDtype]
    OUTPUT_DTYPE_BFLOAT16: _ClassVar[OutputDtype]
    OUTPUT_DTYPE_FLOAT16: _ClassVar[OutputDtype]
OUTPUT_DTYPE_UNSPECIFIED: OutputDtype
OUTPUT_DTYPE_SAME: OutputDtype
OUTPUT_DTYPE_FLOAT32: OutputDtype
OUTPUT_DTYPE_BFLOAT16: OutputDtype
OUTPUT_DTYPE_FLOAT16: OutputDtype

class StartMergeJobRequest(_message.Message):
    __slots__ = ("adapter_id", "base_model_id", "output_name", "output_dtype", "tags", "method", "input_model_ids", "params")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    INPUT_MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    base_model_id: str
    output_name: str
    output_dtype: OutputDtype
    tags: _containers.ScalarMap[str, str]
    method: str
    input_model_ids: _containers.RepeatedScalarFieldContainer[str]
    params: _struct_pb2.Struct
    def __init__(self, adapter_id: _Optional[str] = ..., base_model_id: _Optional[str] = ..., output_name: _Optional[str] = ..., output_dtype: _Optional[_Union[OutputDtype, str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., method: _Optional[str] = ..., input_model_ids: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class StartMergeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: MergeJob
    def __init__(self, job: _Optional[_Union[MergeJob, _Mapping]] = ...) -> None: ...

class MergeJob(_message.Message):
    __slots__ = ("status", "request", "result")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.JobStatus
    request: StartMergeJobRequest
    result: MergeResult
    def __init__(self, status: _Optional[_Union[_common_pb2.JobStatus, _Mapping]] = ..., request: _Optional[_Union[StartMergeJobRequest, _Mapping]] = ..., result: _Optional[_Union[MergeResult, _Mapping]] = ...) -> None: ...

class MergeResult(_message.Message):
    __slots__ = ("merged_model_id", "tensors_merged", "tensors_total", "max_abs_delta", "seconds")
    MERGED_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_MERGED_FIELD_NUMBER: _ClassVar[int]
    TENSORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DELTA_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    merged_model_id: str
    tensors_merged: int
    tensors_total: int
    max_abs_delta: float
    seconds: float
    def __init__(self, merged_model_id: _Optional[str] = ..., tensors_merged: _Optional[int] = ..., tensors_total: _Optional[int] = ..., max_abs_delta: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class GetMergeJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetMergeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: MergeJob
    def __init__(self, job: _Optional[_Union[MergeJob, _Mapping]] = ...) -> None: ...

class ListMergeJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.JobState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[_common_pb2.JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMergeJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[MergeJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[MergeJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelMergeJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelMergeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: MergeJob
    def __init__(self, job: _Optional[_Union[MergeJob, _Mapping]] = ...) -> None: ...

class WatchMergeJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchMergeJobResponse(_message.Message):
    __slots__ = ("event", "job")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.ProgressEvent
    job: MergeJob
    def __init__(self, event: _Optional[_Union[_common_pb2.ProgressEvent, _Mapping]] = ..., job: _Optional[_Union[MergeJob, _Mapping]] = ...) -> None: ...
