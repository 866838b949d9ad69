"""Who may call what: permissions, the roles that grant them, and every RPC's.

Roles are per project: a principal is `viewer` in one project and `operator`
in another. A role grants a fixed set of permissions; every RPC of every
service needs exactly one (the table below), and a test checks the table
against the protos, so a new RPC cannot ship unguarded.
"""

from __future__ import annotations

# Read artifacts, lineage, reports, deployments, jobs, metrics, the audit log.
READ = "read"
# Generate with deployed models (the gateway's and inference's Generate).
GENERATE = "generate"
# Register artifacts and datasets, upload blobs, move aliases, archive.
WRITE = "write"
# Start, cancel and resume jobs and workflows (train, merge, validate).
RUN = "run"
# Deploy, roll back, roll out (pause, resume, promote, abort), load models.
DEPLOY = "deploy"
# Key management, retention and garbage collection.
ADMIN = "admin"
# Service-to-service only (key checks, audit records): no role grants it.
INTERNAL = "internal"

PERMISSIONS = (READ, GENERATE, WRITE, RUN, DEPLOY, ADMIN, INTERNAL)
# Permissions whose refusal is a refused mutation attempt, and so audited.
MUTATIONS = frozenset({WRITE, RUN, DEPLOY, ADMIN, INTERNAL})

ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ, GENERATE}),
    "operator": frozenset({READ, GENERATE, WRITE, RUN, DEPLOY}),
    "admin": frozenset({READ, GENERATE, WRITE, RUN, DEPLOY, ADMIN}),
}
# The role of the services themselves when they act on their own account.
SERVICE_ROLE = "service"
SERVICE_PERMISSIONS = frozenset(PERMISSIONS)

# "*" in a role mapping: the role in every project.
ALL_PROJECTS = "*"


def roles_granting(permission: str) -> list[str]:
    """The roles that grant `permission`, least powerful first (for messages)."""
    return [role for role, granted in ROLES.items() if permission in granted]


_P = "/lorafleet.v1."

RPC_PERMISSIONS: dict[str, str] = {
    # --- gateway ---------------------------------------------------------------
    f"{_P}GatewayService/RunWorkflow": RUN,
    f"{_P}GatewayService/Deploy": DEPLOY,
    f"{_P}GatewayService/Rollback": DEPLOY,
    f"{_P}GatewayService/Generate": GENERATE,
    f"{_P}GatewayService/GenerateStream": GENERATE,
    f"{_P}GatewayService/GetDeploymentMetrics": READ,
    f"{_P}GatewayService/GetWorkflowJob": READ,
    f"{_P}GatewayService/ListWorkflowJobs": READ,
    f"{_P}GatewayService/CancelWorkflowJob": RUN,
    f"{_P}GatewayService/ResumeWorkflow": RUN,
    f"{_P}GatewayService/WatchWorkflowJob": READ,
    f"{_P}GatewayService/StartRollout": DEPLOY,
    f"{_P}GatewayService/GetRollout": READ,
    f"{_P}GatewayService/ListRollouts": READ,
    f"{_P}GatewayService/PauseRollout": DEPLOY,
    f"{_P}GatewayService/ResumeRollout": DEPLOY,
    f"{_P}GatewayService/PromoteRollout": DEPLOY,
    f"{_P}GatewayService/AbortRollout": DEPLOY,
    f"{_P}GatewayService/WatchRollout": READ,
    f"{_P}GatewayService/ConcludeExperiment": DEPLOY,
    # --- inference ---------------------------------------------------------------
    f"{_P}InferenceService/LoadModel": DEPLOY,
    f"{_P}InferenceService/UnloadModel": DEPLOY,
    f"{_P}InferenceService/ListLoadedModels": READ,
    f"{_P}InferenceService/Generate": GENERATE,
    f"{_P}InferenceService/GenerateStream": GENERATE,
    f"{_P}InferenceService/Classify": GENERATE,
    # --- merger ------------------------------------------------------------------
    f"{_P}MergerService/StartMergeJob": RUN,
    f"{_P}MergerService/GetMergeJob": READ,
    f"{_P}MergerService/ListMergeJobs": READ,
    f"{_P}MergerService/CancelMergeJob": RUN,
    f"{_P}MergerService/WatchMergeJob": READ,
    # --- trainer -----------------------------------------------------------------
    f"{_P}TrainerService/StartTrainJob": RUN,
    f"{_P}TrainerService/GetTrainJob": READ,
    f"{_P}TrainerService/ListTrainJobs": READ,
    f"{_P}TrainerService/CancelTrainJob": RUN,
    f"{_P}TrainerService/WatchTrainJob": READ,
    # Reads a dataset file on the server's disk: as much as starting a job.
    f"{_P}TrainerService/ValidateDataset": RUN,
    # --- validator ---------------------------------------------------------------
    f"{_P}ValidatorService/StartValidationJob": RUN,
    f"{_P}ValidatorService/GetValidationJob": READ,
    f"{_P}ValidatorService/ListValidationJobs": READ,
    f"{_P}ValidatorService/CancelValidationJob": RUN,
    f"{_P}ValidatorService/WatchValidationJob": READ,
    # --- registry ----------------------------------------------------------------
    f"{_P}RegistryService/RegisterArtifact": WRITE,
    f"{_P}RegistryService/GetArtifact": READ,
    f"{_P}RegistryService/ListArtifacts": READ,
    f"{_P}RegistryService/GetLineage": READ,
    f"{_P}RegistryService/GetTrainingRun": READ,
    f"{_P}RegistryService/ListTrainingRuns": READ,
    f"{_P}RegistryService/RecordValidationReport": WRITE,
    f"{_P}RegistryService/GetValidationReport": READ,
    f"{_P}RegistryService/ListValidationReports": READ,
    f"{_P}RegistryService/SetAlias": WRITE,
    f"{_P}RegistryService/ResolveAlias": READ,
    f"{_P}RegistryService/PutDeployment": DEPLOY,
    f"{_P}RegistryService/GetDeployment": READ,
    f"{_P}RegistryService/ListDeployments": READ,
    f"{_P}RegistryService/RollbackAlias": WRITE,
    f"{_P}RegistryService/ListAliasHistory": READ,
    f"{_P}RegistryService/ArchiveArtifact": WRITE,
    f"{_P}RegistryService/UploadBlob": WRITE,
    f"{_P}RegistryService/GetUploadStatus": WRITE,
    f"{_P}RegistryService/DownloadBlob": READ,
    f"{_P}RegistryService/GetModelCard": READ,
    f"{_P}RegistryService/ListAuditEvents": READ,
    f"{_P}RegistryService/ApplyRetention": ADMIN,
    f"{_P}RegistryService/CollectGarbage": ADMIN,
    f"{_P}RegistryService/AppendDataset": WRITE,
    f"{_P}RegistryService/UpdateArtifact": WRITE,
    f"{_P}RegistryService/CreateApiKey": ADMIN,
    f"{_P}RegistryService/ListApiKeys": ADMIN,
    f"{_P}RegistryService/RevokeApiKey": ADMIN,
    f"{_P}RegistryService/AuthenticateApiKey": INTERNAL,
    f"{_P}RegistryService/RecordAuditEvent": INTERNAL,
}

# Open to everyone, authenticated or not: probes and tooling must work.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def permission_for(method: str) -> str | None:
    """The permission `method` ("/pkg.Service/Method") needs; None = open.

    A method in neither table needs INTERNAL: an RPC added without an entry
    is closed to people until someone decides who may call it.
    """
    service = method.strip("/").split("/", 1)[0]
    if service in OPEN_SERVICES:
        return None
    return RPC_PERMISSIONS.get(method, INTERNAL)
