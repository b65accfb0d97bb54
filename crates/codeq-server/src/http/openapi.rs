//! The OpenAPI 3.1 document of the API (`GET /openapi.json`), generated
//! with `utoipa` from the declarations below: one `#[utoipa::path]` per
//! route of [`super::routes`], and the JSON forms of requests and answers
//! as schema types.
//!
//! The schema types describe the wire forms; the handlers parse into
//! their own borrowing types. Tests keep the two in step: every route of
//! the router is in the document and nothing else is (`tests/api/
//! openapi.rs`); a client generated from the document drives a real
//! server through create, claim and result, and every operation is called
//! with good and bad input, each answer's status, body and headers checked
//! against what the document declares (`tools/openapi_check.py`).

// The schema types and path functions exist for their attributes only:
// never built, never called.
#![allow(dead_code, clippy::large_enum_variant)]

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::Value;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{
    Array, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Responses};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

/// The document as JSON, built once.
pub fn document_json() -> Bytes {
    static JSON: OnceLock<Bytes> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serializing a document of plain maps and strings cannot fail.
        Bytes::from(serde_json::to_vec(&ApiDoc::openapi()).unwrap_or_default())
    })
    .clone()
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "codeQ",
        description = "Task queue server: producers create tasks, workers claim them under a \
                       lease and report results. Every error answer is `{error, code}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        create_task, create_tasks, claim_task, claim_tasks, submit_results, get_task,
        get_artifact, get_result, submit_result, heartbeat, abandon, nack, subscribe,
        renew_subscription, delete_subscription, list_queues, get_queue, get_queue_stats,
        cleanup, healthz, readyz, metrics, openapi_json, cancel_task, cancel_tasks, list_tasks,
        get_settings, put_settings, pause_queue, resume_queue, list_dead_letters,
        replay_dead_letters, purge_dead_letters, get_task_detail, get_throughput, get_workers
    ),
    components(schemas(CommandName)),
    modifiers(&BearerAuth, &ListedTasks, &RequestIds, &OptionalBodies),
    tags(
        (name = "producers", description = "Creating tasks"),
        (name = "workers", description = "Claiming tasks and reporting on them"),
        (name = "tasks", description = "Reading tasks and results (any token)"),
        (name = "admin", description = "Queue depths and retention (admin token)"),
        (name = "operations", description = "Health, metrics and this document (no token)")
    )
)]
struct ApiDoc;

/// Adds the bearer-token scheme every `/v1/codeq` route requires.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Adds `ListedTask`: a task as the listings answer it, the same as
/// `Task` but with `payload` only when asked for (`includePayload=true`).
struct ListedTasks;

impl Modify for ListedTasks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        let Some(RefOr::T(Schema::Object(task))) = components.schemas.get("Task") else { return };
        let mut listed = task.clone();
        listed.required.retain(|name| name != "payload");
        listed.description =
            Some("A task as listed: `payload` only with `includePayload=true`.".into());
        components.schemas.insert("ListedTask".into(), RefOr::T(Schema::Object(listed)));
    }
}

/// Adds `X-Request-Id`, which every answer carries, to every response.
struct RequestIds;

impl Modify for RequestIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let request_id = HeaderBuilder::new()
            .description(Some("The caller's `X-Request-Id`, or one the server made"))
            .build();
        let operations = openapi.paths.paths.values_mut().flat_map(|item| {
            [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten()
        });
        for operation in operations {
            let Responses { responses, .. } = &mut operation.responses;
            for response in responses.values_mut() {
                if let RefOr::T(response) = response {
                    response.headers.insert("X-Request-Id".into(), request_id.clone().into());
                }
            }
        }
    }
}

/// An optional body (`request_body = Option<T>`) is written by `utoipa` as
/// `oneOf: [T, null]`, which says a JSON `null` would do: it would not.
/// This makes it `T`, not required (an empty body reads as `{}`).
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bodies = openapi.paths.paths.values_mut().flat_map(|item| {
            let operations = [&mut item.put, &mut item.post].into_iter().flatten();
            operations.filter_map(|operation| match operation.request_body.as_mut() {
                Some(RefOr::T(body)) => Some(body),
                _ => None,
            })
        });
        for body in bodies {
            for content in body.content.values_mut() {
                let RefOr::T(content) = content else { continue };
                let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else { continue };
                let not_null = |schema: &&RefOr<Schema>| {
                    !matches!(schema, RefOr::T(Schema::Object(object))
                        if object.schema_type == SchemaType::Type(Type::Null))
                };
                if let [only] = one_of.items.iter().filter(not_null).collect::<Vec<_>>()[..] {
                    content.schema = Some(only.clone());
                }
            }
        }
    }
}

/// Raw bytes of any media type (an artifact's download).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// `TaskPage.tasks`: listed tasks.
/// A JSON value of any type but `null` (a task's payload): one of the
/// five other types, each a schema of its own (client generators read a
/// `oneOf` better than a list of types).
fn any_json_but_null() -> Schema {
    let typed = |kind: Type| ObjectBuilder::new().schema_type(kind).build();
    OneOfBuilder::new()
        .item(typed(Type::Object))
        .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(SchemaType::AnyValue)))
        .item(typed(Type::String))
        .item(typed(Type::Number))
        .item(typed(Type::Boolean))
        .description(Some(
            "Any JSON but `null` (an object in practice), at most `maxPayloadBytes` compact.",
        ))
        .build()
        .into()
}

fn listed_tasks() -> Array {
    ArrayBuilder::new().items(Ref::from_schema_name("ListedTask")).build()
}

// ---------------------------------------------------------------- schemas

/// Every error answer.
#[derive(ToSchema)]
#[schema(title = "Error")]
pub struct ErrorBody {
    /// Human-readable message naming the field or the reason.
    error: String,
    /// Stable snake_case code, e.g. `invalid_field`, `not_in_progress`.
    code: String,
}

/// A task's status.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting to be claimed (ready, or delayed until `runAt`).
    Pending,
    /// Claimed by a worker under a lease.
    InProgress,
    /// Finished with a result.
    Completed,
    /// Finished with an error, or dead-lettered (`error: MAX_ATTEMPTS`).
    Failed,
    /// Cancelled by its producer or an admin.
    Cancelled,
}

/// A task. Absent optional fields are omitted.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Task {
    /// Server-assigned id (UUID v7).
    #[schema(format = "uuid")]
    id: String,
    /// The queue.
    command: String,
    /// The producer's JSON payload, compact, as a JSON string.
    payload: String,
    /// 0..9, higher is claimed first.
    #[schema(minimum = 0, maximum = 9)]
    priority: u8,
    /// Result callback URL as given (any http(s) URL with a host and no
    /// whitespace, so not always RFC 3986); credentials in it are shown as
    /// `***@`, and a caller other than the task's producer and admins sees
    /// its origin only, followed by `/…`.
    webhook: Option<String>,
    /// Life-cycle status.
    status: TaskStatus,
    /// The claiming worker, while `IN_PROGRESS`.
    worker_id: Option<String>,
    /// End of the lease (advisory), while `IN_PROGRESS`.
    #[schema(format = DateTime)]
    lease_until: Option<String>,
    /// Deliveries so far.
    attempts: u32,
    /// Delivery limit per round (a dead-letter replay starts a new round).
    #[schema(minimum = 1, maximum = 1000)]
    max_attempts: u32,
    /// Terminal error.
    error: Option<String>,
    /// Last nack reason, or `LEASE_EXPIRED`.
    last_reason: Option<String>,
    /// When the task becomes (or became) visible, if scheduled.
    #[schema(format = DateTime)]
    run_at: Option<String>,
    /// The producer's idempotency key.
    idempotency_key: Option<String>,
    /// Creation time.
    #[schema(format = DateTime)]
    created_at: String,
    /// Last change.
    #[schema(format = DateTime)]
    updated_at: String,
    /// When the task became terminal.
    #[schema(format = DateTime)]
    completed_at: Option<String>,
    /// Times it was replayed from the dead-letter queue (omitted when 0).
    replays: Option<u32>,
}

/// `POST /v1/codeq/tasks`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CreateTask {
    /// Queue name: 1–128 characters of `A-Z a-z 0-9 _ - . :`.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")]
    command: String,
    /// Any JSON but `null` (an object in practice), at most
    /// `maxPayloadBytes` compact.
    #[schema(schema_with = any_json_but_null)]
    payload: Value,
    /// Clamped to 0..9; default 0.
    priority: Option<i64>,
    /// 1..1000; default `maxAttemptsDefault`.
    #[schema(minimum = 1, maximum = 1000)]
    max_attempts: Option<u32>,
    /// Absolute http(s) URL with a host and no whitespace (stored as
    /// given); `user:password@` in it is sent as Basic auth.
    webhook: Option<String>,
    /// A repeat while the task exists returns it (`Idempotent-Replayed: true`).
    #[schema(min_length = 1, max_length = 256)]
    idempotency_key: Option<String>,
    /// RFC 3339, from 0000-01-02T00:00:00Z to 9999-12-30T00:00:00Z; in the past means now.
    /// Wins over `delaySeconds`.
    #[schema(format = DateTime)]
    run_at: Option<String>,
    /// Seconds before the task becomes visible, 0..315360000 (ten years).
    #[schema(minimum = 0, maximum = 315_360_000)]
    delay_seconds: Option<u64>,
}

/// `POST /v1/codeq/tasks/batch`.
#[derive(ToSchema)]
pub struct CreateTasks {
    /// 1..100 tasks, each created (or refused) on its own.
    #[schema(min_items = 1, max_items = 100)]
    tasks: Vec<CreateTask>,
}

/// One created task of a batch.
#[derive(ToSchema)]
pub struct CreatedItem {
    /// The created (or replayed) task.
    task: Task,
}

/// The refusal of one batch item.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ErrorItem {
    /// The item's task (result batches).
    task_id: Option<String>,
    /// Message.
    error: String,
    /// Code.
    code: String,
}

/// One item of a batch create's answer.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum CreateItemOutcome {
    /// Created.
    Created(CreatedItem),
    /// Refused.
    Error(ErrorItem),
}

/// The answer of a batch create, in request order.
#[derive(ToSchema)]
pub struct CreatedTasks {
    /// One per request item.
    results: Vec<CreateItemOutcome>,
}

/// `POST /v1/codeq/tasks/claim`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Claim {
    /// Subset of the token's `eventTypes`, 1..100 names; default: all of them.
    #[schema(min_items = 1, max_items = 100)]
    commands: Option<Vec<String>>,
    /// 1..`maxLeaseSeconds`; default `defaultLeaseSeconds`.
    #[schema(minimum = 1)]
    lease_seconds: Option<u64>,
    /// Long poll, clamped to 0..30.
    wait_seconds: Option<i64>,
}

/// `POST /v1/codeq/tasks/claim/batch`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ClaimMany {
    /// As for a single claim.
    #[schema(min_items = 1, max_items = 100)]
    commands: Option<Vec<String>>,
    /// As for a single claim.
    #[schema(minimum = 1)]
    lease_seconds: Option<u64>,
    /// As for a single claim.
    wait_seconds: Option<i64>,
    /// How many tasks at most, 1..100.
    #[schema(minimum = 1, maximum = 100)]
    count: u32,
}

/// `{"tasks": [...]}`.
#[derive(ToSchema)]
pub struct Tasks {
    /// The claimed tasks.
    tasks: Vec<Task>,
}

/// `POST …/heartbeat`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Heartbeat {
    /// New lease from now, 1..`maxLeaseSeconds`; default `defaultLeaseSeconds`.
    #[schema(minimum = 1)]
    extend_seconds: Option<u64>,
    /// The delivery this call belongs to (fencing).
    attempt: Option<u32>,
}

/// The answer of a heartbeat.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct HeartbeatAnswer {
    /// Always true.
    ok: bool,
    /// The new end of the lease.
    #[schema(format = DateTime)]
    lease_until: String,
}

/// `POST …/abandon`.
#[derive(ToSchema)]
pub struct Abandon {
    /// The delivery this call belongs to (fencing).
    attempt: Option<u32>,
}

/// `{"status": "requeued"}`.
#[derive(ToSchema)]
pub struct Requeued {
    /// `requeued`.
    #[schema(pattern = "^requeued$")]
    status: String,
}

/// `POST …/nack`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Nack {
    /// Retry delay (capped by `backoffMaxSeconds`); default: the backoff policy.
    #[schema(minimum = 0)]
    delay_seconds: Option<u64>,
    /// Why (shown as `lastReason`).
    reason: Option<String>,
    /// The delivery this call belongs to (fencing).
    attempt: Option<u32>,
}

/// What a nack did.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum NackStatus {
    /// Back in the queue after `delaySeconds`.
    Requeued,
    /// Out of deliveries: dead-lettered.
    Dlq,
}

/// The answer of a nack.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct NackAnswer {
    /// Requeued or dead-lettered.
    status: NackStatus,
    /// The delay applied (0 when dead-lettered).
    delay_seconds: u64,
}

/// A result's outcome.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultStatus {
    /// Done; `result` holds the output.
    Completed,
    /// Failed; `error` says why.
    Failed,
}

/// A stored outcome.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordStatus {
    /// Done; `result` holds the output.
    Completed,
    /// Failed (or dead-lettered); `error` says why.
    Failed,
    /// Cancelled; `error` holds the reason given.
    Cancelled,
}

/// An artifact as submitted: a URL, or inline bytes the server stores.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ArtifactUpload {
    /// A plain file name (no `/`, `\`, NUL, not `.` or `..`, ≤ 255 bytes),
    /// unique among the result's artifacts.
    name: String,
    /// Absolute http(s) URL with a host and no whitespace, stored as given.
    url: Option<String>,
    /// Base64 bytes, at most `maxArtifactBytes` decoded.
    content_base64: Option<String>,
    /// Media type.
    content_type: Option<String>,
}

/// `POST /v1/codeq/tasks/{id}/result`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SubmitResult {
    /// Outcome.
    status: ResultStatus,
    /// Required (a JSON object) when `COMPLETED`; any JSON, stored as
    /// given, when `FAILED`.
    result: Option<Value>,
    /// Required (non-empty) when `FAILED`.
    error: Option<String>,
    /// Files produced (at most 100).
    #[schema(max_items = 100)]
    artifacts: Option<Vec<ArtifactUpload>>,
    /// The delivery this call belongs to (fencing).
    attempt: Option<u32>,
    /// A claim answered with the result once it is stored (needs scope
    /// `codeq:claim`; checked before the result is stored): the answer's
    /// `next` is the task claimed, absent when none is ready.
    claim_next: Option<Claim>,
}

/// One item of a batch of results.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SubmitResultItem {
    /// The task.
    #[schema(format = "uuid")]
    task_id: String,
    /// Outcome.
    status: ResultStatus,
    /// Required (a JSON object) when `COMPLETED`; any JSON, stored as
    /// given, when `FAILED`.
    result: Option<Value>,
    /// Required (non-empty) when `FAILED`.
    error: Option<String>,
    /// Files produced (at most 100).
    #[schema(max_items = 100)]
    artifacts: Option<Vec<ArtifactUpload>>,
    /// The delivery this item belongs to (fencing).
    attempt: Option<u32>,
}

/// `POST /v1/codeq/tasks/batch/results`.
#[derive(ToSchema)]
pub struct SubmitResults {
    /// 1..100 items, each stored (or refused) on its own.
    #[schema(min_items = 1, max_items = 100)]
    results: Vec<SubmitResultItem>,
}

/// A stored artifact.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Artifact {
    /// File name.
    name: String,
    /// Where the bytes are.
    url: String,
    /// Media type.
    content_type: Option<String>,
}

/// A stored result record.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ResultRecord {
    /// The task.
    #[schema(format = "uuid")]
    task_id: String,
    /// Outcome.
    status: RecordStatus,
    /// The worker's output: an object when `COMPLETED`, any JSON as
    /// given when `FAILED`.
    result: Option<Value>,
    /// The error (`FAILED`).
    error: Option<String>,
    /// Files produced.
    artifacts: Option<Vec<Artifact>>,
    /// When the task became terminal.
    #[schema(format = DateTime)]
    completed_at: String,
    /// The task claimed next (only in the answer to a result submitted
    /// with `claimNext`, when a task was ready).
    next: Option<Task>,
}

/// One stored result of a batch.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct StoredItem {
    /// The task.
    task_id: String,
    /// Its stored result.
    result: ResultRecord,
}

/// One item of a batch of results' answer.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum ResultItemOutcome {
    /// Stored (or a repeat of the stored one).
    Stored(StoredItem),
    /// Refused.
    Error(ErrorItem),
}

/// The answer of a batch of results, in request order.
#[derive(ToSchema)]
pub struct StoredResults {
    /// One per request item.
    results: Vec<ResultItemOutcome>,
}

/// A task and its result.
#[derive(ToSchema)]
pub struct TaskWithResult {
    /// The task.
    task: Task,
    /// Its result.
    result: ResultRecord,
}

/// Depths of one command's queues.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct QueueStats {
    /// The command.
    command: String,
    /// Pending and visible now.
    ready: u64,
    /// Pending until a later time.
    delayed: u64,
    /// Claimed under a lease.
    in_progress: u64,
    /// Dead-lettered.
    dlq: u64,
    /// Claims skip the command.
    paused: bool,
    /// Most tasks in progress at once.
    max_in_flight: Option<u32>,
    /// Claims per second.
    rate_per_second: Option<f64>,
    /// Claims that may follow one another at once.
    burst: Option<u32>,
}

/// A command's pause and flow limits (a field left out is unset).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct QueueSettings {
    /// Claims skip the command; creates are still accepted.
    paused: Option<bool>,
    /// 1..1000000: most tasks of the command in progress at once.
    #[schema(minimum = 1, maximum = 1000000)]
    max_in_flight: Option<u32>,
    /// Claims per second (token bucket), above 0, at most 1000000.
    #[schema(exclusive_minimum = 0, maximum = 1_000_000)]
    rate_per_second: Option<f64>,
    /// 1..1000000: the bucket's size (default 1); needs `ratePerSecond`.
    #[schema(minimum = 1, maximum = 1000000)]
    burst: Option<u32>,
}

/// A command name: 1–128 characters of `A-Z a-z 0-9 _ - . :`.
#[derive(ToSchema)]
#[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")]
pub struct CommandName(String);

/// `POST …/cancel`.
#[derive(ToSchema)]
pub struct Cancel {
    /// Why (at most 1024 bytes of UTF-8, which `maxLength` cannot say: a
    /// text of fewer characters may still be too long); stored as the
    /// result's `error`.
    #[schema(max_length = 1024)]
    reason: Option<String>,
}

/// `POST /v1/codeq/tasks/batch/cancel`.
#[derive(ToSchema)]
pub struct CancelMany {
    /// 1..100 task ids.
    #[schema(min_items = 1, max_items = 100)]
    ids: Vec<String>,
    /// Why, for every one (at most 1024 bytes of UTF-8, as for one cancel).
    #[schema(max_length = 1024)]
    reason: Option<String>,
}

/// One cancelled task.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CancelledItem {
    /// The task.
    task_id: String,
    /// `CANCELLED`.
    status: String,
}

/// One item of a batch cancel's answer.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum CancelItemOutcome {
    /// Cancelled.
    Cancelled(CancelledItem),
    /// Refused.
    Refused(ErrorItem),
}

/// What a batch cancel did, item by item.
#[derive(ToSchema)]
pub struct CancelledTasks {
    /// In request order.
    results: Vec<CancelItemOutcome>,
}

/// A page of tasks, newest first.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct TaskPage {
    /// The tasks (without `payload` unless `includePayload=true`).
    #[schema(schema_with = listed_tasks)]
    tasks: Vec<Task>,
    /// The next page's `cursor`; omitted on the last page.
    next_cursor: Option<String>,
}

/// Which dead letters a replay or purge takes: `ids`, or the filters.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct DeadLetterSelection {
    /// These dead letters (1..10000).
    #[schema(min_items = 1, max_items = 10000)]
    ids: Option<Vec<String>>,
    /// Those whose error or last reason contains this text.
    error_contains: Option<String>,
    /// Those that failed before this time (RFC 3339, from
    /// 0000-01-02T00:00:00Z to 9999-12-30T00:00:00Z, as every time taken).
    #[schema(format = DateTime)]
    failed_before: Option<String>,
    /// Those that failed after this time.
    #[schema(format = DateTime)]
    failed_after: Option<String>,
    /// 1..10000; default 1000.
    #[schema(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// Replay only: spread the replayed tasks at this many per second
    /// (above 0, at most 1000000).
    #[schema(exclusive_minimum = 0, maximum = 1_000_000)]
    rate_per_second: Option<f64>,
}

/// What a replay did.
#[derive(ToSchema)]
pub struct Replayed {
    /// How many were replayed.
    replayed: u64,
    /// Their ids.
    ids: Vec<String>,
}

/// What a purge did.
#[derive(ToSchema)]
pub struct Purged {
    /// How many were deleted.
    purged: u64,
    /// Their ids.
    ids: Vec<String>,
}

/// Every command's depths.
#[derive(ToSchema)]
pub struct Queues {
    /// One per command ever used.
    queues: Vec<QueueStats>,
}

/// `POST /v1/codeq/admin/tasks/cleanup`.
#[derive(ToSchema)]
pub struct Cleanup {
    /// Most tasks deleted, 1..100000; default 1000.
    #[schema(minimum = 1, maximum = 100000)]
    limit: Option<u32>,
    /// RFC 3339 (from 0000-01-02T00:00:00Z to 9999-12-30T00:00:00Z); default now.
    #[schema(format = DateTime)]
    before: Option<String>,
}

/// What a cleanup deleted.
#[derive(ToSchema)]
pub struct Cleaned {
    /// Tasks deleted.
    deleted: u64,
    /// The cut-off applied.
    #[schema(format = DateTime)]
    before: String,
    /// The limit applied.
    limit: u64,
}

/// How the notifications of a command are spread over subscriptions.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Every subscription.
    Fanout,
    /// One per `groupId`, in turn.
    Group,
    /// One per minute, chosen by the minute.
    Hash,
}

/// `POST /v1/codeq/workers/subscriptions`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Subscribe {
    /// Where `queue.ready` notifications are posted (absolute http(s) URL).
    callback_url: String,
    /// 1..100 commands to listen to, within the token's; default the token's.
    #[schema(min_items = 1, max_items = 100)]
    event_types: Option<Vec<String>>,
    /// 1..86400; default 300.
    #[schema(minimum = 1, maximum = 86400)]
    ttl_seconds: Option<u64>,
    /// Default `fanout` (`group` for a token with `workerGroup`).
    delivery_mode: Option<DeliveryMode>,
    /// Required for `group`; 1..128 bytes of UTF-8 (not characters); must
    /// equal the token's `workerGroup` when set.
    #[schema(min_length = 1, max_length = 128)]
    group_id: Option<String>,
    /// 0..3600; default `subscriptionMinIntervalSeconds`.
    #[schema(minimum = 0, maximum = 3600)]
    min_interval_seconds: Option<u64>,
}

/// `POST …/subscriptions/{id}/heartbeat`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RenewSubscription {
    /// 1..86400; default 300.
    #[schema(minimum = 1, maximum = 86400)]
    ttl_seconds: Option<u64>,
}

/// A subscription's id and when it lapses.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SubscriptionAnswer {
    /// Its id.
    subscription_id: String,
    /// When it lapses unless renewed.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    status: String,
}

/// One command's counts per minute, oldest first (`minutes` numbers each).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CommandSeries {
    /// The command.
    command: String,
    /// Tasks created.
    created: Vec<u64>,
    /// Deliveries (claims).
    claimed: Vec<u64>,
    /// Tasks completed.
    completed: Vec<u64>,
    /// Tasks failed, dead letters included.
    failed: Vec<u64>,
    /// Tasks cancelled.
    cancelled: Vec<u64>,
    /// Leases that ran out.
    lease_expired: Vec<u64>,
}

/// The last hour of traffic, a minute at a time (in memory since the
/// server started; sampled once a second).
#[derive(ToSchema)]
pub struct Throughput {
    /// The start of the oldest minute.
    #[schema(format = DateTime)]
    from: String,
    /// Minutes per series (60).
    minutes: u32,
    /// Commands with traffic in the hour (or the one asked for).
    commands: Vec<CommandSeries>,
}

/// A worker the server knows of: leases it holds, subscriptions it keeps.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct WorkerSummary {
    /// The worker's `sub`.
    worker_id: String,
    /// Leases held (among those listed).
    leases: u64,
    /// Commands of those leases.
    commands: Vec<String>,
    /// The soonest of their ends.
    #[schema(format = DateTime)]
    next_lease_end: Option<String>,
    /// Live subscriptions.
    subscriptions: u64,
}

/// A lease held now.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Lease {
    /// The task.
    #[schema(format = "uuid")]
    task_id: String,
    /// Its command.
    command: String,
    /// The worker holding it.
    worker_id: String,
    /// When it ends.
    #[schema(format = DateTime)]
    lease_until: Option<String>,
    /// The delivery number.
    attempts: u32,
}

/// A subscription that has not lapsed.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SubscriptionInfo {
    /// Its id.
    subscription_id: String,
    /// Its owner.
    worker_id: String,
    /// Where notifications go.
    callback_url: String,
    /// Commands listened to (`*`: the token's all).
    event_types: Vec<String>,
    /// How notifications are spread.
    delivery_mode: DeliveryMode,
    /// The group, for `group` delivery.
    group_id: Option<String>,
    /// Least seconds between two notifications.
    min_interval_seconds: u64,
    /// When it lapses unless renewed.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// The workers the server knows of.
#[derive(ToSchema)]
pub struct Workers {
    /// By worker id.
    workers: Vec<WorkerSummary>,
    /// Leases held, up to `limit`.
    leases: Vec<Lease>,
    /// More leases are held than listed.
    truncated: bool,
    /// Live subscriptions.
    subscriptions: Vec<SubscriptionInfo>,
}

/// How a settled result callback ended.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum CallbackOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    GaveUp,
    /// Its URL was refused when its turn came (a private address, say):
    /// not sent then (attempts before it, if any, failed).
    Refused,
}

/// Where a task's result callback stands.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct WebhookState {
    /// `waiting` (the task has not ended), `owed` (being delivered) or
    /// `settled` (delivered, given up or refused: see `outcome`).
    state: String,
    /// How a settled callback ended. Absent when not kept (a callback
    /// settled before the server kept outcomes).
    outcome: Option<CallbackOutcome>,
    /// Attempts made, while owed, and when settled with an outcome.
    attempts: Option<u32>,
    /// The next attempt, while owed.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    /// `X-CodeQ-Delivery`, while owed.
    delivery_id: Option<String>,
}

/// One task as an operator sees it.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct TaskDetail {
    /// The task, with its payload.
    task: Task,
    /// The worker holding it, or the one whose result ended it; cleared
    /// by a nack, an abandon, a cancel and a dead-lettering.
    last_worker_id: Option<String>,
    /// It ended in the dead-letter queue.
    dead_lettered: bool,
    /// When it is (or was) claimable.
    #[schema(format = DateTime)]
    visible_at: String,
    /// Its result, once it has ended.
    result: Option<ResultRecord>,
    /// Its result callback, when it has a webhook.
    webhook: Option<WebhookState>,
}

// --------------------------------------------------------------- answers

/// Answers of a call with a token.
#[derive(IntoResponses)]
pub enum AuthErrors {
    /// Missing, malformed, expired or unverifiable token.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
    /// Missing scope, command outside the token's `eventTypes`, not the
    /// task's owner, or not admin.
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// Answers of a call any valid token may make.
#[derive(IntoResponses)]
pub enum TokenErrors {
    /// Missing, malformed, expired or unverifiable token.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
}

/// Answers of a call with a body.
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// Malformed JSON, or a missing or invalid field (the message names it).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body paused longer than `bodyReadTimeoutSeconds`, or arrived
    /// slower than `bodyMinBytesPerSecond` (`body_timeout`).
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// The body, a payload or an artifact is over its limit.
    #[response(status = 413)]
    TooLarge(ErrorBody),
}

/// Answers about one task a call changes.
#[derive(IntoResponses)]
pub enum TaskErrors {
    /// No such task.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Wrong state: not in progress, lease lost, stale attempt, or already
    /// terminal with another outcome, worker or attempt.
    #[response(status = 409)]
    Conflict(ErrorBody),
}

/// The answer about one task a call reads.
#[derive(IntoResponses)]
pub enum TaskNotFound {
    /// No such task (or, for its result or artifact, none yet).
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// Answers of the server's side to a call that reads.
#[derive(IntoResponses)]
pub enum ServerErrors {
    /// A bug; the body never leaks internals.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// Storage unavailable, or too many requests in flight (`overloaded`).
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait before a retry")))]
    Unavailable(ErrorBody),
}

/// Answers of the server's side to a call that writes.
#[derive(IntoResponses)]
pub enum WriteErrors {
    /// A bug; the body never leaks internals.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// Storage unavailable, or too many requests in flight (`overloaded`):
    /// nothing was done.
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait before a retry")))]
    Unavailable(ErrorBody),
    /// Storage is full (`insufficient_storage`: the disk, or Redis at its
    /// `maxmemory`): nothing was done.
    #[response(status = 507)]
    InsufficientStorage(ErrorBody),
}

// ----------------------------------------------------------------- paths

#[utoipa::path(post, path = "/v1/codeq/tasks", tag = "producers", security(("bearer" = [])),
    request_body = CreateTask,
    responses((status = 202, description = "The created task, or the holder of its idempotency key", body = Task,
            headers(("Idempotent-Replayed" = String, description = "`true` when the task was created earlier with this idempotency key"))),
        (status = 409, description = "`idempotency_conflict`: the idempotency key is held by a task of another command; `too_many_commands`: the command is new and the server knows `maxCommands` commands already", body = ErrorBody),
        AuthErrors, BodyErrors, WriteErrors))]
fn create_task() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/batch", tag = "producers", security(("bearer" = [])),
    request_body = CreateTasks,
    responses((status = 200, description = "One outcome per item, in order", body = CreatedTasks),
        AuthErrors, BodyErrors, WriteErrors))]
fn create_tasks() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/claim", tag = "workers", security(("bearer" = [])),
    request_body = Option<Claim>,
    responses((status = 200, description = "A task, now IN_PROGRESS for this worker", body = Task),
        (status = 204, description = "Nothing became ready within `waitSeconds`"),
        AuthErrors, BodyErrors, WriteErrors))]
fn claim_task() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/claim/batch", tag = "workers", security(("bearer" = [])),
    request_body = ClaimMany,
    responses((status = 200, description = "1..count tasks", body = Tasks),
        (status = 204, description = "Nothing became ready within `waitSeconds`"),
        AuthErrors, BodyErrors, WriteErrors))]
fn claim_tasks() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/batch/results", tag = "workers", security(("bearer" = [])),
    request_body = SubmitResults,
    responses((status = 200, description = "One outcome per item, in order", body = StoredResults),
        AuthErrors, BodyErrors, WriteErrors))]
fn submit_results() {}

#[utoipa::path(get, path = "/v1/codeq/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The task", body = Task),
        TokenErrors, TaskNotFound, ServerErrors))]
fn get_task() {}

#[utoipa::path(get, path = "/v1/codeq/tasks/{id}/artifacts/{name}", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id"), ("name" = String, Path, description = "Artifact name")),
    responses((status = 200, description = "The stored bytes, in the artifact's own content type \
            (`application/octet-stream` when it has none)",
            content((inline(Binary) = "application/octet-stream"), (inline(Binary) = "*/*")),
            headers(("Content-Disposition" = String, description = "`attachment`, with the file name"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"))),
        AuthErrors, TaskNotFound, ServerErrors))]
fn get_artifact() {}

#[utoipa::path(get, path = "/v1/codeq/tasks/{id}/result", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The task and its result", body = TaskWithResult),
        TokenErrors, TaskNotFound, ServerErrors))]
fn get_result() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/{id}/result", tag = "workers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    request_body = SubmitResult,
    responses((status = 200, description = "The stored result record", body = ResultRecord),
        AuthErrors, BodyErrors, TaskErrors, WriteErrors))]
fn submit_result() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/{id}/heartbeat", tag = "workers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    request_body = Option<Heartbeat>,
    responses((status = 200, description = "The lease was extended", body = HeartbeatAnswer),
        AuthErrors, BodyErrors, TaskErrors, WriteErrors))]
fn heartbeat() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/{id}/abandon", tag = "workers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    request_body = Option<Abandon>,
    responses((status = 200, description = "Back in the ready queue", body = Requeued),
        AuthErrors, BodyErrors, TaskErrors, WriteErrors))]
fn abandon() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/{id}/nack", tag = "workers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    request_body = Option<Nack>,
    responses((status = 200, description = "Requeued with a delay, or dead-lettered", body = NackAnswer),
        AuthErrors, BodyErrors, TaskErrors, WriteErrors))]
fn nack() {}

#[utoipa::path(post, path = "/v1/codeq/workers/subscriptions", tag = "workers", security(("bearer" = [])),
    request_body = Subscribe,
    responses((status = 200, description = "The subscription was stored", body = SubscriptionAnswer),
        (status = 409, description = "The worker holds 100 live subscriptions already (`too_many_subscriptions`)", body = ErrorBody),
        AuthErrors, BodyErrors, WriteErrors))]
fn subscribe() {}

#[utoipa::path(post, path = "/v1/codeq/workers/subscriptions/{id}/heartbeat", tag = "workers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Subscription id")),
    request_body = Option<RenewSubscription>,
    responses((status = 200, description = "The subscription was renewed", body = SubscriptionAnswer),
        (status = 404, description = "No such subscription, or it lapsed", body = ErrorBody),
        AuthErrors, BodyErrors, WriteErrors))]
fn renew_subscription() {}

#[utoipa::path(delete, path = "/v1/codeq/workers/subscriptions/{id}", tag = "workers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 204, description = "The subscription was deleted"),
        (status = 404, description = "No such subscription, or it lapsed", body = ErrorBody),
        AuthErrors, WriteErrors))]
fn delete_subscription() {}

#[utoipa::path(get, path = "/v1/codeq/admin/queues", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every command's depths", body = Queues),
        AuthErrors, ServerErrors))]
fn list_queues() {}

#[utoipa::path(get, path = "/v1/codeq/admin/queues/{command}", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    responses((status = 200, description = "The command's depths (zeros when unused)", body = QueueStats),
        (status = 400, description = "Not a valid command name", body = ErrorBody),
        AuthErrors, ServerErrors))]
fn get_queue() {}

#[utoipa::path(get, path = "/v1/codeq/admin/queues/{command}/stats", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    responses((status = 200, description = "The same as without `/stats`", body = QueueStats),
        (status = 400, description = "Not a valid command name", body = ErrorBody),
        AuthErrors, ServerErrors))]
fn get_queue_stats() {}

#[utoipa::path(post, path = "/v1/codeq/admin/tasks/cleanup", tag = "admin", security(("bearer" = [])),
    request_body = Option<Cleanup>,
    responses((status = 200, description = "Terminal tasks past retention were deleted", body = Cleaned),
        AuthErrors, BodyErrors, WriteErrors))]
fn cleanup() {}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves", body = Health),
        (status = 503, description = "Storage has failed; the process is exiting", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before a retry")))))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Storage answers", body = Health),
        (status = 503, description = "Storage does not answer", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before a retry")))))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format (OpenMetrics when `Accept` asks for it); \
            without the queue depths, and with `codeq_storage_up 0`, while storage does not answer",
            content(
                (String = "text/plain"),
                (String = "application/openmetrics-text")))))]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", body = Value)))]
fn openapi_json() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/{id}/cancel", tag = "producers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    request_body = Option<Cancel>,
    responses((status = 200, description = "The task, now CANCELLED", body = Task),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "`task_terminal`: the task had already ended", body = ErrorBody),
        AuthErrors, BodyErrors, WriteErrors))]
fn cancel_task() {}

#[utoipa::path(post, path = "/v1/codeq/tasks/batch/cancel", tag = "producers", security(("bearer" = [])),
    request_body = CancelMany,
    responses((status = 200, description = "One outcome per id, in order", body = CancelledTasks),
        AuthErrors, BodyErrors, WriteErrors))]
fn cancel_tasks() {}

#[utoipa::path(get, path = "/v1/codeq/admin/tasks", tag = "admin", security(("bearer" = [])),
    params(("command" = Option<CommandName>, Query, description = "Only this command"),
        ("status" = Option<TaskStatus>, Query, description = "Only this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1..1000; default 100"),
        ("cursor" = Option<String>, Query, description = "The previous page's `nextCursor`"),
        ("includePayload" = Option<bool>, Query, description = "Show payloads")),
    responses((status = 200, description = "Tasks, newest first", body = TaskPage),
        (status = 400, description = "A bad query field", body = ErrorBody),
        AuthErrors, ServerErrors))]
fn list_tasks() {}

#[utoipa::path(get, path = "/v1/codeq/admin/queues/{command}/settings", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    responses((status = 200, description = "The command's settings", body = QueueSettings),
        (status = 400, description = "Not a valid command name", body = ErrorBody),
        AuthErrors, ServerErrors))]
fn get_settings() {}

#[utoipa::path(put, path = "/v1/codeq/admin/queues/{command}/settings", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    request_body = QueueSettings,
    responses((status = 200, description = "The settings now in force", body = QueueSettings),
        (status = 409, description = "`too_many_commands`: the command is new and the server knows `maxCommands` commands already", body = ErrorBody),
        AuthErrors, BodyErrors, WriteErrors))]
fn put_settings() {}

#[utoipa::path(post, path = "/v1/codeq/admin/queues/{command}/pause", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    responses((status = 200, description = "Paused; the settings now in force", body = QueueSettings),
        (status = 400, description = "Not a valid command name", body = ErrorBody),
        (status = 409, description = "`too_many_commands`: the command is new and the server knows `maxCommands` commands already", body = ErrorBody),
        AuthErrors, WriteErrors))]
fn pause_queue() {}

#[utoipa::path(post, path = "/v1/codeq/admin/queues/{command}/resume", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    responses((status = 200, description = "Resumed; the settings now in force", body = QueueSettings),
        (status = 400, description = "Not a valid command name", body = ErrorBody),
        (status = 409, description = "`too_many_commands`: the command is new and the server knows `maxCommands` commands already", body = ErrorBody),
        AuthErrors, WriteErrors))]
fn resume_queue() {}

#[utoipa::path(get, path = "/v1/codeq/admin/queues/{command}/dlq", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1..1000; default 100"),
        ("cursor" = Option<String>, Query, description = "The previous page's `nextCursor`"),
        ("errorContains" = Option<String>, Query, description = "Error or last reason contains"),
        ("failedBefore" = Option<String>, Query, description = "RFC 3339"),
        ("failedAfter" = Option<String>, Query, description = "RFC 3339"),
        ("includePayload" = Option<bool>, Query, description = "Show payloads")),
    responses((status = 200, description = "Dead letters, newest first", body = TaskPage),
        (status = 400, description = "A bad query field or command", body = ErrorBody),
        AuthErrors, ServerErrors))]
fn list_dead_letters() {}

#[utoipa::path(post, path = "/v1/codeq/admin/queues/{command}/dlq/replay", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    request_body = Option<DeadLetterSelection>,
    responses((status = 200, description = "The dead letters sent round again", body = Replayed),
        AuthErrors, BodyErrors, WriteErrors))]
fn replay_dead_letters() {}

#[utoipa::path(post, path = "/v1/codeq/admin/queues/{command}/dlq/purge", tag = "admin", security(("bearer" = [])),
    params(("command" = CommandName, Path, description = "Command name")),
    request_body = Option<DeadLetterSelection>,
    responses((status = 200, description = "The dead letters deleted", body = Purged),
        AuthErrors, BodyErrors, WriteErrors))]
fn purge_dead_letters() {}

#[utoipa::path(get, path = "/v1/codeq/admin/tasks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The task with its result and callback", body = TaskDetail),
        AuthErrors, TaskNotFound, ServerErrors))]
fn get_task_detail() {}

#[utoipa::path(get, path = "/v1/codeq/admin/throughput", tag = "admin", security(("bearer" = [])),
    params(("command" = Option<CommandName>, Query, description = "Only this command")),
    responses((status = 200, description = "The last hour per minute", body = Throughput),
        (status = 400, description = "A bad query field", body = ErrorBody),
        AuthErrors, ServerErrors))]
fn get_throughput() {}

#[utoipa::path(get, path = "/v1/codeq/admin/workers", tag = "admin", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most leases listed, 1..10000; default 1000")),
    responses((status = 200, description = "Leases held and live subscriptions, by worker", body = Workers),
        (status = 400, description = "A bad query field", body = ErrorBody),
        AuthErrors, ServerErrors))]
fn get_workers() {}
