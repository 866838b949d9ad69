import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_STATE_UNSPECIFIED: _ClassVar[RolloutState]
    ROLLOUT_STATE_PENDING: _ClassVar[RolloutState]
    ROLLOUT_STATE_PROGRESSING: _ClassVar[RolloutState]
    ROLLOUT_STATE_PAUSED: _ClassVar[RolloutState]
    ROLLOUT_STATE_AWAITING_DECISION: _ClassVar[RolloutState]
    ROLLOUT_STATE_PROMOTED: _ClassVar[RolloutState]
    ROLLOUT_STATE_ROLLED_BACK: _ClassVar[RolloutState]
    ROLLOUT_STATE_FAILED: _ClassVar[RolloutState]
ROLLOUT_STATE_UNSPECIFIED: RolloutState
ROLLOUT_STATE_PENDING: RolloutState
ROLLOUT_STATE_PROGRESSING: RolloutState
ROLLOUT_STATE_PAUSED: RolloutState
ROLLOUT_STATE_AWAITING_DECISION: RolloutState
ROLLOUT_STATE_PROMOTED: RolloutState
ROLLOUT_STATE_ROLLED_BACK: RolloutState
ROLLOUT_STATE_FAILED: RolloutState

class RunWorkflowRequest(_message.Message):
    __slots__ = ("base_model_id", "dataset_id", "dataset_path", "name", "train_config", "gates", "deployment", "skip_deploy", "strategy", "validation_examples", "validation_max_new_tokens", "request_id", "rollout", "validation_mode", "force", "force_reason")
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SKIP_DEPLOY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_MODE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    FORCE_REASON_FIELD_NUMBER: _ClassVar[int]
    base_model_id: str
    dataset_id: str
    dataset_path: str
    name: str
    train_config: _common_pb2.TrainConfig
    gates: _common_pb2.ValidationGates
    deployment: str
    skip_deploy: bool
    strategy: _common_pb2.DeploymentStrategy
    validation_examples: int
    validation_max_new_tokens: int
    request_id: str
    rollout: RolloutSettings
    validation_mode: str
    force: bool
    force_reason: str
    def __init__(self, base_model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., dataset_path: _Optional[str] = ..., name: _Optional[str] = ..., train_config: _Optional[_Union[_common_pb2.TrainConfig, _Mapping]] = ..., gates: _Optional[_Union[_common_pb2.ValidationGates, _Mapping]] = ..., deployment: _Optional[str] = ..., skip_deploy: _Optional[bool] = ..., strategy: _Optional[_Union[_common_pb2.DeploymentStrategy, str]] = ..., validation_examples: _Optional[int] = ..., validation_max_new_tokens: _Optional[int] = ..., request_id: _Optional[str] = ..., rollout: _Optional[_Union[RolloutSettings, _Mapping]] = ..., validation_mode: _Optional[str] = ..., force: _Optional[bool] = ..., force_reason: _Optional[str] = ...) -> None: ...

class RunWorkflowResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: WorkflowJob
    def __init__(self, job: _Optional[_Union[WorkflowJob, _Mapping]] = ...) -> None: ...

class WorkflowJob(_message.Message):
    __slots__ = ("status", "request", "result", "train_job_id", "merge_job_id", "validation_job_id", "steps", "attempt", "worker_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MERGE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.JobStatus
    request: RunWorkflowRequest
    result: WorkflowResult
    train_job_id: str
    merge_job_id: str
    validation_job_id: str
    steps: _containers.RepeatedCompositeFieldContainer[WorkflowStep]
    attempt: int
    worker_id: str
    def __init__(self, status: _Optional[_Union[_common_pb2.JobStatus, _Mapping]] = ..., request: _Optional[_Union[RunWorkflowRequest, _Mapping]] = ..., result: _Optional[_Union[WorkflowResult, _Mapping]] = ..., train_job_id: _Optional[str] = ..., merge_job_id: _Optional[str] = ..., validation_job_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[WorkflowStep, _Mapping]]] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class WorkflowStep(_message.Message):
    __slots__ = ("name", "state", "job_id", "output", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: _common_pb2.JobState
    job_id: str
    output: str
    message: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., job_id: _Optional[str] = ..., output: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class WorkflowResult(_message.Message):
    __slots__ = ("dataset_id", "adapter_id", "merged_model_id", "report", "deployment", "train_metrics")
    class TrainMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    MERGED_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_METRICS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    adapter_id: str
    merged_model_id: str
    report: _common_pb2.ValidationReport
    deployment: _common_pb2.Deployment
    train_metrics: _containers.ScalarMap[str, float]
    def __init__(self, dataset_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., merged_model_id: _Optional[str] = ..., report: _Optional[_Union[_common_pb2.ValidationReport, _Mapping]] = ..., deployment: _Optional[_Union[_common_pb2.Deployment, _Mapping]] = ..., train_metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("deployment", "model_id", "adapter_id", "strategy", "reason")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    model_id: str
    adapter_id: str
    strategy: _common_pb2.DeploymentStrategy
    reason: str
    def __init__(self, deployment: _Optional[str] = ..., model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., strategy: _Optional[_Union[_common_pb2.DeploymentStrategy, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: _common_pb2.Deployment
    def __init__(self, deployment: _Optional[_Union[_common_pb2.Deployment, _Mapping]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("deployment", "reason")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    reason: str
    def __init__(self, deployment: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: _common_pb2.Deployment
    def __init__(self, deployment: _Optional[_Union[_common_pb2.Deployment, _Mapping]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("deployment", "params", "routing_key")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    params: _common_pb2.GenerationParams
    routing_key: str
    def __init__(self, deployment: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., routing_key: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("output", "model_id", "adapter_id", "deployment_revision", "arm")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    output: _common_pb2.GenerationOutput
    model_id: str
    adapter_id: str
    deployment_revision: int
    arm: str
    def __init__(self, output: _Optional[_Union[_common_pb2.GenerationOutput, _Mapping]] = ..., model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., deployment_revision: _Optional[int] = ..., arm: _Optional[str] = ...) -> None: ...

class GenerateStreamRequest(_message.Message):
    __slots__ = ("deployment", "params", "routing_key")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    params: _common_pb2.GenerationParams
    routing_key: str
    def __init__(self, deployment: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., routing_key: _Optional[str] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("chunk", "model_id", "adapter_id", "arm", "deployment_revision")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.GenerationChunk
    model_id: str
    adapter_id: str
    arm: str
    deployment_revision: int
    def __init__(self, chunk: _Optional[_Union[_common_pb2.GenerationChunk, _Mapping]] = ..., model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., arm: _Optional[str] = ..., deployment_revision: _Optional[int] = ...) -> None: ...

class GetWorkflowJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetWorkflowJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: WorkflowJob
    def __init__(self, job: _Optional[_Union[WorkflowJob, _Mapping]] = ...) -> None: ...

class ListWorkflowJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.JobState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[_common_pb2.JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkflowJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[WorkflowJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[WorkflowJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelWorkflowJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelWorkflowJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: WorkflowJob
    def __init__(self, job: _Optional[_Union[WorkflowJob, _Mapping]] = ...) -> None: ...

class ResumeWorkflowRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ResumeWorkflowResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: WorkflowJob
    def __init__(self, job: _Optional[_Union[WorkflowJob, _Mapping]] = ...) -> None: ...

class WatchWorkflowJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchWorkflowJobResponse(_message.Message):
    __slots__ = ("event", "job")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.ProgressEvent
    job: WorkflowJob
    def __init__(self, event: _Optional[_Union[_common_pb2.ProgressEvent, _Mapping]] = ..., job: _Optional[_Union[WorkflowJob, _Mapping]] = ...) -> None: ...

class GetDeploymentMetricsRequest(_message.Message):
    __slots__ = ("deployment", "window_s")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    window_s: int
    def __init__(self, deployment: _Optional[str] = ..., window_s: _Optional[int] = ...) -> None: ...

class GetDeploymentMetricsResponse(_message.Message):
    __slots__ = ("deployment", "window_s", "arms")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    window_s: int
    arms: _containers.RepeatedCompositeFieldContainer[ArmMetrics]
    def __init__(self, deployment: _Optional[str] = ..., window_s: _Optional[int] = ..., arms: _Optional[_Iterable[_Union[ArmMetrics, _Mapping]]] = ...) -> None: ...

class ArmMetrics(_message.Message):
    __slots__ = ("arm", "requests", "errors", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "completion_tokens", "empty_outputs", "invalid_json", "blocked_outputs", "mean_output_chars", "shadow", "agreements", "shadow_dropped")
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ARM_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EMPTY_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    INVALID_JSON_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MEAN_OUTPUT_CHARS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_FIELD_NUMBER: _ClassVar[int]
    arm: str
    requests: int
    errors: _containers.ScalarMap[str, int]
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    completion_tokens: int
    empty_outputs: int
    invalid_json: int
    blocked_outputs: int
    mean_output_chars: float
    shadow: bool
    agreements: int
    shadow_dropped: int
    def __init__(self, arm: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[_Mapping[str, int]] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., completion_tokens: _Optional[int] = ..., empty_outputs: _Optional[int] = ..., invalid_json: _Optional[int] = ..., blocked_outputs: _Optional[int] = ..., mean_output_chars: _Optional[float] = ..., shadow: _Optional[bool] = ..., agreements: _Optional[int] = ..., shadow_dropped: _Optional[int] = ...) -> None: ...

class RolloutSettings(_message.Message):
    __slots__ = ("strategy", "canary", "ab_test", "shadow", "blue_green", "analysis", "promote_alias", "manual_decision", "tick_s")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    AB_TEST_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    BLUE_GREEN_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_ALIAS_FIELD_NUMBER: _ClassVar[int]
    MANUAL_DECISION_FIELD_NUMBER: _ClassVar[int]
    TICK_S_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    canary: CanarySettings
    ab_test: AbTestSettings
    shadow: ShadowSettings
    blue_green: BlueGreenSettings
    analysis: AnalysisSettings
    promote_alias: str
    manual_decision: bool
    tick_s: float
    def __init__(self, strategy: _Optional[str] = ..., canary: _Optional[_Union[CanarySettings, _Mapping]] = ..., ab_test: _Optional[_Union[AbTestSettings, _Mapping]] = ..., shadow: _Optional[_Union[ShadowSettings, _Mapping]] = ..., blue_green: _Optional[_Union[BlueGreenSettings, _Mapping]] = ..., analysis: _Optional[_Union[AnalysisSettings, _Mapping]] = ..., promote_alias: _Optional[str] = ..., manual_decision: _Optional[bool] = ..., tick_s: _Optional[float] = ...) -> None: ...

class CanarySettings(_message.Message):
    __slots__ = ("steps_bps", "step_interval_s")
    STEPS_BPS_FIELD_NUMBER: _ClassVar[int]
    STEP_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    steps_bps: _containers.RepeatedScalarFieldContainer[int]
    step_interval_s: float
    def __init__(self, steps_bps: _Optional[_Iterable[int]] = ..., step_interval_s: _Optional[float] = ...) -> None: ...

class AbTestSettings(_message.Message):
    __slots__ = ("candidate_weight_bps", "duration_s", "sample_size", "confidence")
    CANDIDATE_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    candidate_weight_bps: int
    duration_s: float
    sample_size: int
    confidence: float
    def __init__(self, candidate_weight_bps: _Optional[int] = ..., duration_s: _Optional[float] = ..., sample_size: _Optional[int] = ..., confidence: _Optional[float] = ...) -> None: ...

class ShadowSettings(_message.Message):
    __slots__ = ("mirror_bps", "duration_s", "sample_size", "min_agreement")
    MIRROR_BPS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    mirror_bps: int
    duration_s: float
    sample_size: int
    min_agreement: float
    def __init__(self, mirror_bps: _Optional[int] = ..., duration_s: _Optional[float] = ..., sample_size: _Optional[int] = ..., min_agreement: _Optional[float] = ...) -> None: ...

class BlueGreenSettings(_message.Message):
    __slots__ = ("warmup_requests", "warmup_prompt", "keep_previous_s")
    WARMUP_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_PROMPT_FIELD_NUMBER: _ClassVar[int]
    KEEP_PREVIOUS_S_FIELD_NUMBER: _ClassVar[int]
    warmup_requests: int
    warmup_prompt: str
    keep_previous_s: float
    def __init__(self, warmup_requests: _Optional[int] = ..., warmup_prompt: _Optional[str] = ..., keep_previous_s: _Optional[float] = ...) -> None: ...

class AnalysisSettings(_message.Message):
    __slots__ = ("max_error_rate", "max_latency_ratio", "min_quality", "max_length_ratio", "min_requests", "false_rollback_rate", "tolerance")
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FALSE_ROLLBACK_RATE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    max_error_rate: float
    max_latency_ratio: float
    min_quality: float
    max_length_ratio: float
    min_requests: int
    false_rollback_rate: float
    tolerance: float
    def __init__(self, max_error_rate: _Optional[float] = ..., max_latency_ratio: _Optional[float] = ..., min_quality: _Optional[float] = ..., max_length_ratio: _Optional[float] = ..., min_requests: _Optional[int] = ..., false_rollback_rate: _Optional[float] = ..., tolerance: _Optional[float] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("deployment", "model_id", "adapter_id", "settings", "force", "reason", "request_id")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    model_id: str
    adapter_id: str
    settings: RolloutSettings
    force: bool
    reason: str
    request_id: str
    def __init__(self, deployment: _Optional[str] = ..., model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., settings: _Optional[_Union[RolloutSettings, _Mapping]] = ..., force: _Optional[bool] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("id", "deployment", "strategy", "state", "stable", "candidate", "candidate_weight_bps", "step", "total_steps", "settings", "message", "last_analysis", "status", "validation_report_id", "forced", "reason", "experiment", "deployment_revision", "attempt")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    deployment: str
    strategy: str
    state: RolloutState
    stable: _common_pb2.DeploymentTarget
    candidate: _common_pb2.DeploymentTarget
    candidate_weight_bps: int
    step: int
    total_steps: int
    settings: RolloutSettings
    message: str
    last_analysis: AnalysisResult
    status: _common_pb2.JobStatus
    validation_report_id: str
    forced: bool
    reason: str
    experiment: ExperimentResult
    deployment_revision: int
    attempt: int
    def __init__(self, id: _Optional[str] = ..., deployment: _Optional[str] = ..., strategy: _Optional[str] = ..., state: _Optional[_Union[RolloutState, str]] = ..., stable: _Optional[_Union[_common_pb2.DeploymentTarget, _Mapping]] = ..., candidate: _Optional[_Union[_common_pb2.DeploymentTarget, _Mapping]] = ..., candidate_weight_bps: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., settings: _Optional[_Union[RolloutSettings, _Mapping]] = ..., message: _Optional[str] = ..., last_analysis: _Optional[_Union[AnalysisResult, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.JobStatus, _Mapping]] = ..., validation_report_id: _Optional[str] = ..., forced: _Optional[bool] = ..., reason: _Optional[str] = ..., experiment: _Optional[_Union[ExperimentResult, _Mapping]] = ..., deployment_revision: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class AnalysisResult(_message.Message):
    __slots__ = ("decision", "reason", "candidate_requests", "checks", "stable", "candidate")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    decision: str
    reason: str
    candidate_requests: int
    checks: _containers.RepeatedCompositeFieldContainer[AnalysisCheck]
    stable: ArmMetrics
    candidate: ArmMetrics
    def __init__(self, decision: _Optional[str] = ..., reason: _Optional[str] = ..., candidate_requests: _Optional[int] = ..., checks: _Optional[_Iterable[_Union[AnalysisCheck, _Mapping]]] = ..., stable: _Optional[_Union[ArmMetrics, _Mapping]] = ..., candidate: _Optional[_Union[ArmMetrics, _Mapping]] = ...) -> None: ...

class AnalysisCheck(_message.Message):
    __slots__ = ("name", "value", "threshold", "passed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    threshold: float
    passed: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class RolloutEvent(_message.Message):
    __slots__ = ("sequence", "time", "kind", "message", "candidate_weight_bps", "step", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    kind: str
    message: str
    candidate_weight_bps: int
    step: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., candidate_weight_bps: _Optional[int] = ..., step: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ExperimentResult(_message.Message):
    __slots__ = ("metric", "arms", "winner", "significant", "p_value", "summary", "confidence")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    arms: _containers.RepeatedCompositeFieldContainer[ExperimentArm]
    winner: str
    significant: bool
    p_value: float
    summary: str
    confidence: float
    def __init__(self, metric: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ExperimentArm, _Mapping]]] = ..., winner: _Optional[str] = ..., significant: _Optional[bool] = ..., p_value: _Optional[float] = ..., summary: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class ExperimentArm(_message.Message):
    __slots__ = ("arm", "requests", "success_rate", "success_rate_low", "success_rate_high", "latency_p50_ms", "latency_p95_ms", "mean_output_chars")
    ARM_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_LOW_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_HIGH_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_OUTPUT_CHARS_FIELD_NUMBER: _ClassVar[int]
    arm: str
    requests: int
    success_rate: float
    success_rate_low: float
    success_rate_high: float
    latency_p50_ms: float
    latency_p95_ms: float
    mean_output_chars: float
    def __init__(self, arm: _Optional[str] = ..., requests: _Optional[int] = ..., success_rate: _Optional[float] = ..., success_rate_low: _Optional[float] = ..., success_rate_high: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., mean_output_chars: _Optional[float] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("rollout_id",)
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    def __init__(self, rollout_id: _Optional[str] = ...) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ("deployment", "page_size", "page_token")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    page_size: int
    page_token: str
    def __init__(self, deployment: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts", "next_page_token")
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[Rollout]
    next_page_token: str
    def __init__(self, rollouts: _Optional[_Iterable[_Union[Rollout, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PauseRolloutRequest(_message.Message):
    __slots__ = ("rollout_id", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reason: str
    def __init__(self, rollout_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PauseRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class ResumeRolloutRequest(_message.Message):
    __slots__ = ("rollout_id", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reason: str
    def __init__(self, rollout_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class PromoteRolloutRequest(_message.Message):
    __slots__ = ("rollout_id", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reason: str
    def __init__(self, rollout_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PromoteRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class AbortRolloutRequest(_message.Message):
    __slots__ = ("rollout_id", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reason: str
    def __init__(self, rollout_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class WatchRolloutRequest(_message.Message):
    __slots__ = ("rollout_id", "after_sequence")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    after_sequence: int
    def __init__(self, rollout_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchRolloutResponse(_message.Message):
    __slots__ = ("event", "rollout")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    event: RolloutEvent
    rollout: Rollout
    def __init__(self, event: _Optional[_Union[RolloutEvent, _Mapping]] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class ConcludeExperimentRequest(_message.Message):
    __slots__ = ("rollout_id",)
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    def __init__(self, rollout_id: _Optional[str] = ...) -> None: ...

class ConcludeExperimentResponse(_message.Message):
    __slots__ = ("result", "rollout")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    result: ExperimentResult
    rollout: Rollout
    def __init__(self, result: _Optional[_Union[ExperimentResult, _Mapping]] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...
