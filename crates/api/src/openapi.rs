//! The API's description (OpenAPI 3.1), generated from the handlers' own types and
//! annotations: served at `/openapi.json`, browsable at `/docs`.
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error answers this body, with a stable `code` to branch on.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `invalid_field`, `database_unavailable`…
    pub code: String,
    /// For a person: what was wrong and what to do.
    pub message: String,
}

/// The errors every management endpoint may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Described, never built: `ApiError` is what answers.
pub(crate) enum Errors {
    /// The request is malformed: its body, its query or an id in its path.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// No bearer token, or one that is neither the admin token nor an active API key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The caller's key may not do this (some endpoints take the admin token only).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such thing, or one the caller may not see (the same answer for both).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The request conflicts with the current state (see `code`).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// A field is not valid: the message names it and says why.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Internal error; the server log has the detail.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// A provider answered the request badly (an OAuth code exchange, say).
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// The database, the broker or the vault is unavailable: retry after `Retry-After`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (`SWITCHYARD_ADMIN_TOKEN`) or a tenant's API key \
                         (`POST /v1/api-keys`). A tenant's key sees its own tenant only.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "The integration hub's API: webhooks in, and everything an operator or a \
                       tenant manages — integrations, routes, records, jobs, syncs, dead letters, \
                       API keys and the audit log. Management endpoints take `Authorization: \
                       Bearer <admin token or tenant API key>`; errors answer \
                       `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    components(schemas(switchyard_core::JobStatus)),
    security(("bearer" = [])),
    tags(
        (name = "webhooks", description = "Senders post events here; each integration authenticates its own."),
        (name = "integrations", description = "Connections to systems: create, configure, test, activate."),
        (name = "routes", description = "Which events go from which integration to which."),
        (name = "records", description = "A record's id in every system, and conflicts between them."),
        (name = "jobs", description = "What was done, with each attempt."),
        (name = "operations", description = "A connector's named operations (a charge, a query, a message): run one and wait for the provider's answer; pending ones are settled by the provider's callback or a query."),
        (name = "messages", description = "Events sent as messages over channels with fallback (WhatsApp, then SMS), and each channel's outcome."),
        (name = "syncs", description = "Batch reads from a system, started by hand or on schedule."),
        (name = "dead letters", description = "Jobs that failed for good: list, replay, purge."),
        (name = "access", description = "Tenants' API keys (admin token only) and the audit log."),
        (name = "notifications", description = "What operators were told: integrations in error, reauthorizations needed, dead letters piling up."),
        (name = "connectors", description = "The systems Switchyard can connect to."),
        (name = "health", description = "Liveness, readiness and Prometheus metrics."),
    )
)]
pub struct ApiDoc;
