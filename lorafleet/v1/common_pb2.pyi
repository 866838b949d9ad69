import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class ArtifactKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_KIND_UNSPECIFIED: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_BASE_MODEL: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_DATASET: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_ADAPTER: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_MERGED_MODEL: _ClassVar[ArtifactKind]

class LoraMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LORA_METHOD_UNSPECIFIED: _ClassVar[LoraMethod]
    LORA_METHOD_LORA: _ClassVar[LoraMethod]
    LORA_METHOD_RSLORA: _ClassVar[LoraMethod]
    LORA_METHOD_DORA: _ClassVar[LoraMethod]
    LORA_METHOD_QLORA: _ClassVar[LoraMethod]

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_AUTO: _ClassVar[TaskType]
    TASK_TYPE_TEXT: _ClassVar[TaskType]
    TASK_TYPE_INSTRUCTION: _ClassVar[TaskType]
    TASK_TYPE_CHAT: _ClassVar[TaskType]
    TASK_TYPE_CLASSIFICATION: _ClassVar[TaskType]
    TASK_TYPE_COMPLETION: _ClassVar[TaskType]
    TASK_TYPE_PREFERENCE: _ClassVar[TaskType]

class PackingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACKING_MODE_UNSPECIFIED: _ClassVar[PackingMode]
    PACKING_MODE_AUTO: _ClassVar[PackingMode]
    PACKING_MODE_ON: _ClassVar[PackingMode]
    PACKING_MODE_OFF: _ClassVar[PackingMode]

class MixedPrecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MIXED_PRECISION_UNSPECIFIED: _ClassVar[MixedPrecision]
    MIXED_PRECISION_AUTO: _ClassVar[MixedPrecision]
    MIXED_PRECISION_NO: _ClassVar[MixedPrecision]
    MIXED_PRECISION_BF16: _ClassVar[MixedPrecision]
    MIXED_PRECISION_FP16: _ClassVar[MixedPrecision]

class DistributedStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTRIBUTED_STRATEGY_UNSPECIFIED: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_AUTO: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_DDP: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_FSDP: _ClassVar[DistributedStrategy]

class LrSchedule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LR_SCHEDULE_UNSPECIFIED: _ClassVar[LrSchedule]
    LR_SCHEDULE_LINEAR: _ClassVar[LrSchedule]
    LR_SCHEDULE_COSINE: _ClassVar[LrSchedule]
    LR_SCHEDULE_CONSTANT: _ClassVar[LrSchedule]

class DeploymentStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STRATEGY_UNSPECIFIED: _ClassVar[DeploymentStrategy]
    DEPLOYMENT_STRATEGY_REPLACE: _ClassVar[DeploymentStrategy]
    DEPLOYMENT_STRATEGY_BLUE_GREEN: _ClassVar[DeploymentStrategy]
    DEPLOYMENT_STRATEGY_CANARY: _ClassVar[DeploymentStrategy]
    DEPLOYMENT_STRATEGY_AB: _ClassVar[DeploymentStrategy]
    DEPLOYMENT_STRATEGY_SHADOW: _ClassVar[DeploymentStrategy]

class TargetRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_ROLE_UNSPECIFIED: _ClassVar[TargetRole]
    TARGET_ROLE_STABLE: _ClassVar[TargetRole]
    TARGET_ROLE_CANDIDATE: _ClassVar[TargetRole]
    TARGET_ROLE_SHADOW: _ClassVar[TargetRole]
    TARGET_ROLE_STANDBY: _ClassVar[TargetRole]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_EOS: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_STOP_SEQUENCE: _ClassVar[FinishReason]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
ARTIFACT_KIND_UNSPECIFIED: ArtifactKind
ARTIFACT_KIND_BASE_MODEL: ArtifactKind
ARTIFACT_KIND_DATASET: ArtifactKind
ARTIFACT_KIND_ADAPTER: ArtifactKind
ARTIFACT_KIND_MERGED_MODEL: ArtifactKind
LORA_METHOD_UNSPECIFIED: LoraMethod
LORA_METHOD_LORA: LoraMethod
LORA_METHOD_RSLORA: LoraMethod
LORA_METHOD_DORA: LoraMethod
LORA_METHOD_QLORA: LoraMethod
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_AUTO: TaskType
TASK_TYPE_TEXT: TaskType
TASK_TYPE_INSTRUCTION: TaskType
TASK_TYPE_CHAT: TaskType
TASK_TYPE_CLASSIFICATION: TaskType
TASK_TYPE_COMPLETION: TaskType
TASK_TYPE_PREFERENCE: TaskType
PACKING_MODE_UNSPECIFIED: PackingMode
PACKING_MODE_AUTO: PackingMode
PACKING_MODE_ON: PackingMode
PACKING_MODE_OFF: PackingMode
MIXED_PRECISION_UNSPECIFIED: MixedPrecision
MIXED_PRECISION_AUTO: MixedPrecision
MIXED_PRECISION_NO: MixedPrecision
MIXED_PRECISION_BF16: MixedPrecision
MIXED_PRECISION_FP16: MixedPrecision
DISTRIBUTED_STRATEGY_UNSPECIFIED: DistributedStrategy
DISTRIBUTED_STRATEGY_AUTO: DistributedStrategy
DISTRIBUTED_STRATEGY_DDP: DistributedStrategy
DISTRIBUTED_STRATEGY_FSDP: DistributedStrategy
LR_SCHEDULE_UNSPECIFIED: LrSchedule
LR_SCHEDULE_LINEAR: LrSchedule
LR_SCHEDULE_COSINE: LrSchedule
LR_SCHEDULE_CONSTANT: LrSchedule
DEPLOYMENT_STRATEGY_UNSPECIFIED: DeploymentStrategy
DEPLOYMENT_STRATEGY_REPLACE: DeploymentStrategy
DEPLOYMENT_STRATEGY_BLUE_GREEN: DeploymentStrategy
DEPLOYMENT_STRATEGY_CANARY: DeploymentStrategy
DEPLOYMENT_STRATEGY_AB: DeploymentStrategy
DEPLOYMENT_STRATEGY_SHADOW: DeploymentStrategy
TARGET_ROLE_UNSPECIFIED: TargetRole
TARGET_ROLE_STABLE: TargetRole
TARGET_ROLE_CANDIDATE: TargetRole
TARGET_ROLE_SHADOW: TargetRole
TARGET_ROLE_STANDBY: TargetRole
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_EOS: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_STOP_SEQUENCE: FinishReason

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("job_id", "state", "progress", "stage", "message", "create_time", "start_time", "end_time", "error", "trace_id", "project", "created_by")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    progress: float
    stage: str
    message: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error: JobError
    trace_id: str
    project: str
    created_by: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., progress: _Optional[float] = ..., stage: _Optional[str] = ..., message: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., trace_id: _Optional[str] = ..., project: _Optional[str] = ..., created_by: _Optional[str] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "state", "stage", "progress", "message", "metrics", "time", "step", "total_steps")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    state: JobState
    stage: str
    progress: float
    message: str
    metrics: _containers.ScalarMap[str, float]
    time: _timestamp_pb2.Timestamp
    step: int
    total_steps: int
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ("path", "sha256", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("id", "kind", "name", "version", "digest", "local_path", "files", "size_bytes", "metadata", "metrics", "tags", "create_time", "aliases", "archived", "project", "description")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: ArtifactKind
    name: str
    version: int
    digest: str
    local_path: str
    files: _containers.RepeatedCompositeFieldContainer[FileEntry]
    size_bytes: int
    metadata: _struct_pb2.Struct
    metrics: _containers.ScalarMap[str, float]
    tags: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    aliases: _containers.RepeatedScalarFieldContainer[str]
    archived: bool
    project: str
    description: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[ArtifactKind, str]] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., digest: _Optional[str] = ..., local_path: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ..., size_bytes: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tags: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., aliases: _Optional[_Iterable[str]] = ..., archived: _Optional[bool] = ..., project: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class LineageEdge(_message.Message):
    __slots__ = ("parent_id", "child_id", "relation")
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHILD_ID_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    parent_id: str
    child_id: str
    relation: str
    def __init__(self, parent_id: _Optional[str] = ..., child_id: _Optional[str] = ..., relation: _Optional[str] = ...) -> None: ...

class ParentRef(_message.Message):
    __slots__ = ("artifact_id", "relation")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    relation: str
    def __init__(self, artifact_id: _Optional[str] = ..., relation: _Optional[str] = ...) -> None: ...

class TrainConfig(_message.Message):
    __slots__ = ("method", "rank", "alpha", "dropout", "target_modules", "learning_rate", "lr_schedule", "warmup_steps", "max_steps", "epochs", "batch_size", "gradient_accumulation_steps", "max_seq_length", "seed", "task_type", "eval_fraction", "weight_decay", "eval_steps", "modules_to_save", "gradient_checkpointing", "mixed_precision", "packing", "group_by_length", "checkpoint_steps", "early_stopping_patience", "early_stopping_threshold", "num_gpus", "distributed_strategy", "labels", "preference_beta", "packing_mode")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    EVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MODULES_TO_SAVE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    MIXED_PRECISION_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEPS_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NUM_GPUS_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_BETA_FIELD_NUMBER: _ClassVar[int]
    PACKING_MODE_FIELD_NUMBER: _ClassVar[int]
    method: LoraMethod
    rank: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    learning_rate: float
    lr_schedule: LrSchedule
    warmup_steps: int
    max_steps: int
    epochs: float
    batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    seed: int
    task_type: TaskType
    eval_fraction: float
    weight_decay: float
    eval_steps: int
    modules_to_save: _containers.RepeatedScalarFieldContainer[str]
    gradient_checkpointing: bool
    mixed_precision: MixedPrecision
    packing: bool
    group_by_length: bool
    checkpoint_steps: int
    early_stopping_patience: int
    early_stopping_threshold: float
    num_gpus: int
    distributed_strategy: DistributedStrategy
    labels: _containers.RepeatedScalarFieldContainer[str]
    preference_beta: float
    packing_mode: PackingMode
    def __init__(self, method: _Optional[_Union[LoraMethod, str]] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., learning_rate: _Optional[float] = ..., lr_schedule: _Optional[_Union[LrSchedule, str]] = ..., warmup_steps: _Optional[int] = ..., max_steps: _Optional[int] = ..., epochs: _Optional[float] = ..., batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., seed: _Optional[int] = ..., task_type: _Optional[_Union[TaskType, str]] = ..., eval_fraction: _Optional[float] = ..., weight_decay: _Optional[float] = ..., eval_steps: _Optional[int] = ..., modules_to_save: _Optional[_Iterable[str]] = ..., gradient_checkpointing: _Optional[bool] = ..., mixed_precision: _Optional[_Union[MixedPrecision, str]] = ..., packing: _Optional[bool] = ..., group_by_length: _Optional[bool] = ..., checkpoint_steps: _Optional[int] = ..., early_stopping_patience: _Optional[int] = ..., early_stopping_threshold: _Optional[float] = ..., num_gpus: _Optional[int] = ..., distributed_strategy: _Optional[_Union[DistributedStrategy, str]] = ..., labels: _Optional[_Iterable[str]] = ..., preference_beta: _Optional[float] = ..., packing_mode: _Optional[_Union[PackingMode, str]] = ...) -> None: ...

class GateResult(_message.Message):
    __slots__ = ("name", "passed", "value", "threshold", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    value: float
    threshold: float
    message: str
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class ModelScores(_message.Message):
    __slots__ = ("model_id", "perplexity", "exact_match", "latency_ms_per_token", "latency_ms_per_request", "examples", "loads", "generates", "samples")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    GENERATES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    perplexity: float
    exact_match: float
    latency_ms_per_token: float
    latency_ms_per_request: float
    examples: int
    loads: bool
    generates: bool
    samples: _containers.RepeatedCompositeFieldContainer[SampleGeneration]
    def __init__(self, model_id: _Optional[str] = ..., perplexity: _Optional[float] = ..., exact_match: _Optional[float] = ..., latency_ms_per_token: _Optional[float] = ..., latency_ms_per_request: _Optional[float] = ..., examples: _Optional[int] = ..., loads: _Optional[bool] = ..., generates: _Optional[bool] = ..., samples: _Optional[_Iterable[_Union[SampleGeneration, _Mapping]]] = ...) -> None: ...

class SampleGeneration(_message.Message):
    __slots__ = ("prompt", "output", "reference")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    output: str
    reference: str
    def __init__(self, prompt: _Optional[str] = ..., output: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class ValidationReport(_message.Message):
    __slots__ = ("id", "candidate_id", "baseline_id", "dataset_id", "candidate", "baseline", "score", "score_metric", "passed", "gates", "create_time", "mode", "suites", "overall_score", "grade", "recommendations", "comparisons", "weights", "grade_bounds", "deployment", "probe_set_id", "base_model_id", "skipped_suites")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SkippedSuitesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORE_METRIC_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SUITES_FIELD_NUMBER: _ClassVar[int]
    OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    GRADE_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PROBE_SET_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SUITES_FIELD_NUMBER: _ClassVar[int]
    id: str
    candidate_id: str
    baseline_id: str
    dataset_id: str
    candidate: ModelScores
    baseline: ModelScores
    score: float
    score_metric: str
    passed: bool
    gates: _containers.RepeatedCompositeFieldContainer[GateResult]
    create_time: _timestamp_pb2.Timestamp
    mode: str
    suites: _containers.RepeatedCompositeFieldContainer[SuiteReport]
    overall_score: float
    grade: str
    recommendations: _containers.RepeatedScalarFieldContainer[str]
    comparisons: _containers.RepeatedCompositeFieldContainer[Comparison]
    weights: _containers.ScalarMap[str, float]
    grade_bounds: _containers.RepeatedCompositeFieldContainer[GradeBound]
    deployment: str
    probe_set_id: str
    base_model_id: str
    skipped_suites: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., baseline_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., candidate: _Optional[_Union[ModelScores, _Mapping]] = ..., baseline: _Optional[_Union[ModelScores, _Mapping]] = ..., score: _Optional[float] = ..., score_metric: _Optional[str] = ..., passed: _Optional[bool] = ..., gates: _Optional[_Iterable[_Union[GateResult, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mode: _Optional[str] = ..., suites: _Optional[_Iterable[_Union[SuiteReport, _Mapping]]] = ..., overall_score: _Optional[float] = ..., grade: _Optional[str] = ..., recommendations: _Optional[_Iterable[str]] = ..., comparisons: _Optional[_Iterable[_Union[Comparison, _Mapping]]] = ..., weights: _Optional[_Mapping[str, float]] = ..., grade_bounds: _Optional[_Iterable[_Union[GradeBound, _Mapping]]] = ..., deployment: _Optional[str] = ..., probe_set_id: _Optional[str] = ..., base_model_id: _Optional[str] = ..., skipped_suites: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CheckResult(_message.Message):
    __slots__ = ("name", "passed", "value", "threshold", "direction", "message", "score", "weight", "critical", "recommendation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    value: float
    threshold: float
    direction: str
    message: str
    score: float
    weight: float
    critical: bool
    recommendation: str
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., direction: _Optional[str] = ..., message: _Optional[str] = ..., score: _Optional[float] = ..., weight: _Optional[float] = ..., critical: _Optional[bool] = ..., recommendation: _Optional[str] = ...) -> None: ...

class SuiteReport(_message.Message):
    __slots__ = ("name", "score", "weight", "passed", "checks", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    name: str
    score: float
    weight: float
    passed: bool
    checks: _containers.RepeatedCompositeFieldContainer[CheckResult]
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., score: _Optional[float] = ..., weight: _Optional[float] = ..., passed: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("target", "model_id", "adapter_id", "overall_score", "suite_scores", "suite_deltas", "overall_delta", "task_metric", "task_value", "task_improvement", "meets_task_bar")
    class SuiteScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SuiteDeltasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    SUITE_SCORES_FIELD_NUMBER: _ClassVar[int]
    SUITE_DELTAS_FIELD_NUMBER: _ClassVar[int]
    OVERALL_DELTA_FIELD_NUMBER: _ClassVar[int]
    TASK_METRIC_FIELD_NUMBER: _ClassVar[int]
    TASK_VALUE_FIELD_NUMBER: _ClassVar[int]
    TASK_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    MEETS_TASK_BAR_FIELD_NUMBER: _ClassVar[int]
    target: str
    model_id: str
    adapter_id: str
    overall_score: float
    suite_scores: _containers.ScalarMap[str, float]
    suite_deltas: _containers.ScalarMap[str, float]
    overall_delta: float
    task_metric: str
    task_value: float
    task_improvement: float
    meets_task_bar: bool
    def __init__(self, target: _Optional[str] = ..., model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., overall_score: _Optional[float] = ..., suite_scores: _Optional[_Mapping[str, float]] = ..., suite_deltas: _Optional[_Mapping[str, float]] = ..., overall_delta: _Optional[float] = ..., task_metric: _Optional[str] = ..., task_value: _Optional[float] = ..., task_improvement: _Optional[float] = ..., meets_task_bar: _Optional[bool] = ...) -> None: ...

class GradeBound(_message.Message):
    __slots__ = ("grade", "min_score")
    GRADE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    grade: str
    min_score: float
    def __init__(self, grade: _Optional[str] = ..., min_score: _Optional[float] = ...) -> None: ...

class ValidationGates(_message.Message):
    __slots__ = ("min_score", "max_perplexity_ratio", "max_latency_ratio", "min_score_delta", "require_no_regression", "min_overall_score", "min_safety_score", "max_suite_regression", "max_regression")
    class MaxRegressionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_PERPLEXITY_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_DELTA_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_NO_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    MIN_OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    MIN_SAFETY_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_SUITE_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    MAX_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    min_score: float
    max_perplexity_ratio: float
    max_latency_ratio: float
    min_score_delta: float
    require_no_regression: bool
    min_overall_score: float
    min_safety_score: float
    max_suite_regression: float
    max_regression: _containers.ScalarMap[str, float]
    def __init__(self, min_score: _Optional[float] = ..., max_perplexity_ratio: _Optional[float] = ..., max_latency_ratio: _Optional[float] = ..., min_score_delta: _Optional[float] = ..., require_no_regression: _Optional[bool] = ..., min_overall_score: _Optional[float] = ..., min_safety_score: _Optional[float] = ..., max_suite_regression: _Optional[float] = ..., max_regression: _Optional[_Mapping[str, float]] = ...) -> None: ...

class DeploymentTarget(_message.Message):
    __slots__ = ("model_id", "adapter_id", "digest", "weight_bps", "arm", "role", "mirror_bps")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MIRROR_BPS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    adapter_id: str
    digest: str
    weight_bps: int
    arm: str
    role: TargetRole
    mirror_bps: int
    def __init__(self, model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., digest: _Optional[str] = ..., weight_bps: _Optional[int] = ..., arm: _Optional[str] = ..., role: _Optional[_Union[TargetRole, str]] = ..., mirror_bps: _Optional[int] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "model_id", "adapter_id", "strategy", "revision", "previous_model_id", "update_time", "updated_by", "reason", "targets", "output_format", "blocked_phrases", "project")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_PHRASES_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_id: str
    adapter_id: str
    strategy: DeploymentStrategy
    revision: int
    previous_model_id: str
    update_time: _timestamp_pb2.Timestamp
    updated_by: str
    reason: str
    targets: _containers.RepeatedCompositeFieldContainer[DeploymentTarget]
    output_format: str
    blocked_phrases: _containers.RepeatedScalarFieldContainer[str]
    project: str
    def __init__(self, name: _Optional[str] = ..., model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., strategy: _Optional[_Union[DeploymentStrategy, str]] = ..., revision: _Optional[int] = ..., previous_model_id: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ..., reason: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[DeploymentTarget, _Mapping]]] = ..., output_format: _Optional[str] = ..., blocked_phrases: _Optional[_Iterable[str]] = ..., project: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class GenerationParams(_message.Message):
    __slots__ = ("prompt", "messages", "raw", "max_new_tokens", "temperature", "top_p", "seed", "stop")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    raw: bool
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., raw: _Optional[bool] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerationOutput(_message.Message):
    __slots__ = ("text", "prompt_tokens", "completion_tokens", "finish_reason", "latency_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    latency_ms: float
    def __init__(self, text: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class GenerationChunk(_message.Message):
    __slots__ = ("text_delta", "finish_reason", "completion_tokens")
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text_delta: str
    finish_reason: FinishReason
    completion_tokens: int
    def __init__(self, text_delta: _Optional[str] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class TrainingRun(_message.Message):
    __slots__ = ("id", "adapter_id", "base_model_id", "base_model_digest", "dataset_id", "dataset_digest", "config", "seed", "metrics", "environment", "split", "train_job_id", "create_time")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    adapter_id: str
    base_model_id: str
    base_model_digest: str
    dataset_id: str
    dataset_digest: str
    config: _struct_pb2.Struct
    seed: int
    metrics: _containers.ScalarMap[str, float]
    environment: _struct_pb2.Struct
    split: _struct_pb2.Struct
    train_job_id: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., base_model_id: _Optional[str] = ..., base_model_digest: _Optional[str] = ..., dataset_id: _Optional[str] = ..., dataset_digest: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., environment: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., split: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., train_job_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
