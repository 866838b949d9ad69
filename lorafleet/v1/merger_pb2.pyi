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

class QuantizedFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTIZED_FORMAT_UNSPECIFIED: _ClassVar[QuantizedFormat]
    QUANTIZED_FORMAT_GGUF_Q8_0: _ClassVar[QuantizedFormat]
    QUANTIZED_FORMAT_GGUF_Q4_0: _ClassVar[QuantizedFormat]
    QUANTIZED_FORMAT_BNB_INT8: _ClassVar[QuantizedFormat]
    QUANTIZED_FORMAT_BNB_NF4: _ClassVar[QuantizedFormat]
OUTPUT_DTYPE_UNSPECIFIED: OutputDtype
OUTPUT_DTYPE_SAME: OutputDtype
OUTPUT_DTYPE_FLOAT32: OutputDtype
OUTPUT_DTYPE_BFLOAT16: OutputDtype
OUTPUT_DTYPE_FLOAT16: OutputDtype
QUANTIZED_FORMAT_UNSPECIFIED: QuantizedFormat
QUANTIZED_FORMAT_GGUF_Q8_0: QuantizedFormat
QUANTIZED_FORMAT_GGUF_Q4_0: QuantizedFormat
QUANTIZED_FORMAT_BNB_INT8: QuantizedFormat
QUANTIZED_FORMAT_BNB_NF4: QuantizedFormat

class StartMergeJobRequest(_message.Message):
    __slots__ = ("adapter_id", "base_model_id", "output_name", "output_dtype", "tags", "method", "input_model_ids", "params", "max_shard_size", "gate", "exports", "request_id", "recipe")
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
    MAX_SHARD_SIZE_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    base_model_id: str
    output_name: str
    output_dtype: OutputDtype
    tags: _containers.ScalarMap[str, str]
    method: str
    input_model_ids: _containers.RepeatedScalarFieldContainer[str]
    params: _struct_pb2.Struct
    max_shard_size: int
    gate: MergeGateConfig
    exports: _containers.RepeatedCompositeFieldContainer[QuantizedExport]
    request_id: str
    recipe: str
    def __init__(self, adapter_id: _Optional[str] = ..., base_model_id: _Optional[str] = ..., output_name: _Optional[str] = ..., output_dtype: _Optional[_Union[OutputDtype, str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., method: _Optional[str] = ..., input_model_ids: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., max_shard_size: _Optional[int] = ..., gate: _Optional[_Union[MergeGateConfig, _Mapping]] = ..., exports: _Optional[_Iterable[_Union[QuantizedExport, _Mapping]]] = ..., request_id: _Optional[str] = ..., recipe: _Optional[str] = ...) -> None: ...

class MergeGateConfig(_message.Message):
    __slots__ = ("max_perplexity_factor", "logit_tolerance", "skip")
    MAX_PERPLEXITY_FACTOR_FIELD_NUMBER: _ClassVar[int]
    LOGIT_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    max_perplexity_factor: float
    logit_tolerance: float
    skip: bool
    def __init__(self, max_perplexity_factor: _Optional[float] = ..., logit_tolerance: _Optional[float] = ..., skip: _Optional[bool] = ...) -> None: ...

class QuantizedExport(_message.Message):
    __slots__ = ("format", "max_perplexity_ratio")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MAX_PERPLEXITY_RATIO_FIELD_NUMBER: _ClassVar[int]
    format: QuantizedFormat
    max_perplexity_ratio: float
    def __init__(self, format: _Optional[_Union[QuantizedFormat, str]] = ..., max_perplexity_ratio: _Optional[float] = ...) -> None: ...

class QuantizedExportResult(_message.Message):
    __slots__ = ("format", "path", "size_bytes", "unquantized_size_bytes", "size_reduction", "perplexity", "unquantized_perplexity", "perplexity_change", "notes")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNQUANTIZED_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIZE_REDUCTION_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    UNQUANTIZED_PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_CHANGE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    format: QuantizedFormat
    path: str
    size_bytes: int
    unquantized_size_bytes: int
    size_reduction: float
    perplexity: float
    unquantized_perplexity: float
    perplexity_change: float
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, format: _Optional[_Union[QuantizedFormat, str]] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., unquantized_size_bytes: _Optional[int] = ..., size_reduction: _Optional[float] = ..., perplexity: _Optional[float] = ..., unquantized_perplexity: _Optional[float] = ..., perplexity_change: _Optional[float] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class StartMergeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: MergeJob
    def __init__(self, job: _Optional[_Union[MergeJob, _Mapping]] = ...) -> None: ...

class MergeJob(_message.Message):
    __slots__ = ("status", "request", "result", "attempt", "worker_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.JobStatus
    request: StartMergeJobRequest
    result: MergeResult
    attempt: int
    worker_id: str
    def __init__(self, status: _Optional[_Union[_common_pb2.JobStatus, _Mapping]] = ..., request: _Optional[_Union[StartMergeJobRequest, _Mapping]] = ..., result: _Optional[_Union[MergeResult, _Mapping]] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class MergeResult(_message.Message):
    __slots__ = ("merged_model_id", "tensors_merged", "tensors_total", "max_abs_delta", "seconds", "notes", "exports", "gate", "shards")
    MERGED_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_MERGED_FIELD_NUMBER: _ClassVar[int]
    TENSORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DELTA_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    merged_model_id: str
    tensors_merged: int
    tensors_total: int
    max_abs_delta: float
    seconds: float
    notes: _containers.RepeatedScalarFieldContainer[str]
    exports: _containers.RepeatedCompositeFieldContainer[QuantizedExportResult]
    gate: _struct_pb2.Struct
    shards: int
    def __init__(self, merged_model_id: _Optional[str] = ..., tensors_merged: _Optional[int] = ..., tensors_total: _Optional[int] = ..., max_abs_delta: _Optional[float] = ..., seconds: _Optional[float] = ..., notes: _Optional[_Iterable[str]] = ..., exports: _Optional[_Iterable[_Union[QuantizedExportResult, _Mapping]]] = ..., gate: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., shards: _Optional[int] = ...) -> None: ...

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
