from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunWorkflowRequest(_message.Message):
    __slots__ = ("base_model_id", "dataset_id", "dataset_path", "name", "train_config", "gates", "deployment", "skip_deploy", "strategy", "validation_examples", "validation_max_new_tokens", "request_id")
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
    def __init__(self, base_model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., dataset_path: _Optional[str] = ..., name: _Optional[str] = ..., train_config: _Optional[_Union[_common_pb2.TrainConfig, _Mapping]] = ..., gates: _Optional[_Union[_common_pb2.ValidationGates, _Mapping]] = ..., deployment: _Optional[str] = ..., skip_deploy: _Optional[bool] = ..., strategy: _Optional[_Union[_common_pb2.DeploymentStrategy, str]] = ..., validation_examples: _Optional[int] = ..., validation_max_new_tokens: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

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
