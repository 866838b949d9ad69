import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadedModel(_message.Message):
    __slots__ = ("model_id", "kind", "name", "adapter_ids", "parameters", "device", "bytes", "pinned", "last_used", "adapters", "queued_requests", "batch_rows", "decode_steps", "mean_batch_rows", "base_stats", "task", "labels")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_IDS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    DECODE_STEPS_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    BASE_STATS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    kind: _common_pb2.ArtifactKind
    name: str
    adapter_ids: _containers.RepeatedScalarFieldContainer[str]
    parameters: int
    device: str
    bytes: int
    pinned: bool
    last_used: _timestamp_pb2.Timestamp
    adapters: _containers.RepeatedCompositeFieldContainer[LoadedAdapter]
    queued_requests: int
    batch_rows: int
    decode_steps: int
    mean_batch_rows: float
    base_stats: ServingStats
    task: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ArtifactKind, str]] = ..., name: _Optional[str] = ..., adapter_ids: _Optional[_Iterable[str]] = ..., parameters: _Optional[int] = ..., device: _Optional[str] = ..., bytes: _Optional[int] = ..., pinned: _Optional[bool] = ..., last_used: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., adapters: _Optional[_Iterable[_Union[LoadedAdapter, _Mapping]]] = ..., queued_requests: _Optional[int] = ..., batch_rows: _Optional[int] = ..., decode_steps: _Optional[int] = ..., mean_batch_rows: _Optional[float] = ..., base_stats: _Optional[_Union[ServingStats, _Mapping]] = ..., task: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadedAdapter(_message.Message):
    __slots__ = ("adapter_ids", "digest", "bytes", "hits", "loads", "last_used", "pinned", "active_requests", "stats", "labels")
    ADAPTER_IDS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    adapter_ids: _containers.RepeatedScalarFieldContainer[str]
    digest: str
    bytes: int
    hits: int
    loads: int
    last_used: _timestamp_pb2.Timestamp
    pinned: bool
    active_requests: int
    stats: ServingStats
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, adapter_ids: _Optional[_Iterable[str]] = ..., digest: _Optional[str] = ..., bytes: _Optional[int] = ..., hits: _Optional[int] = ..., loads: _Optional[int] = ..., last_used: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pinned: _Optional[bool] = ..., active_requests: _Optional[int] = ..., stats: _Optional[_Union[ServingStats, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ServingStats(_message.Message):
    __slots__ = ("requests", "abandoned", "prompt_tokens", "completion_tokens", "mean_queue_ms", "mean_first_token_ms", "mean_ms_per_token")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    requests: int
    abandoned: int
    prompt_tokens: int
    completion_tokens: int
    mean_queue_ms: float
    mean_first_token_ms: float
    mean_ms_per_token: float
    def __init__(self, requests: _Optional[int] = ..., abandoned: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., mean_queue_ms: _Optional[float] = ..., mean_first_token_ms: _Optional[float] = ..., mean_ms_per_token: _Optional[float] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_id", "adapter_id", "pin")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    adapter_id: str
    pin: bool
    def __init__(self, model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., pin: _Optional[bool] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: LoadedModel
    def __init__(self, model: _Optional[_Union[LoadedModel, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model_id", "adapter_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    adapter_id: str
    def __init__(self, model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLoadedModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLoadedModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ...) -> None: ...

class InferenceServiceGenerateRequest(_message.Message):
    __slots__ = ("model_id", "adapter_id", "params")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    adapter_id: str
    params: _common_pb2.GenerationParams
    def __init__(self, model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ...) -> None: ...

class InferenceServiceGenerateResponse(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: _common_pb2.GenerationOutput
    def __init__(self, output: _Optional[_Union[_common_pb2.GenerationOutput, _Mapping]] = ...) -> None: ...

class InferenceServiceGenerateStreamRequest(_message.Message):
    __slots__ = ("model_id", "adapter_id", "params")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    adapter_id: str
    params: _common_pb2.GenerationParams
    def __init__(self, model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ...) -> None: ...

class InferenceServiceGenerateStreamResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.GenerationChunk
    def __init__(self, chunk: _Optional[_Union[_common_pb2.GenerationChunk, _Mapping]] = ...) -> None: ...

class InferenceServiceClassifyRequest(_message.Message):
    __slots__ = ("model_id", "adapter_id", "texts")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    adapter_id: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class InferenceServiceClassifyResponse(_message.Message):
    __slots__ = ("labels", "results", "prompt_tokens", "latency_ms")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    results: _containers.RepeatedCompositeFieldContainer[ClassifiedText]
    prompt_tokens: int
    latency_ms: float
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., results: _Optional[_Iterable[_Union[ClassifiedText, _Mapping]]] = ..., prompt_tokens: _Optional[int] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class ClassifiedText(_message.Message):
    __slots__ = ("label", "class_id", "probabilities", "prompt_tokens")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    label: str
    class_id: int
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    prompt_tokens: int
    def __init__(self, label: _Optional[str] = ..., class_id: _Optional[int] = ..., probabilities: _Optional[_Iterable[float]] = ..., prompt_tokens: _Optional[int] = ...) -> None: ...
