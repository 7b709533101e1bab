//! What every Switchyard service shows its operator: `/healthz` (the process serves),
//! `/readyz` (its dependencies answer) and `/metrics` (Prometheus text from one or more
//! registries). Ingest serves these on its own port; a worker or a scheduler serves them on
//! `SWITCHYARD_HEALTH_LISTEN` with [`serve`].
#![forbid(unsafe_code)]

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use prometheus;

/// Whether a service can do its work, and what each dependency said.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    /// `ready`, `degraded` (working, with less: Redis down) or `not_ready`.
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.status != "not_ready"
    }
}

/// Asks a service whether it is ready.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Readiness> + Send>> + Send + Sync>;

/// Prometheus text of every metric in `registries`.
pub fn render(registries: &[Registry]) -> Response {
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    for r in registries {
        if let Err(e) = encoder.encode(&r.gather(), &mut out) {
            tracing::warn!(error = %e, "a metric could not be encoded");
        }
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        out,
    )
        .into_response()
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(registries: Vec<Registry>, ready: ReadyCheck) -> Router {
    let registries = Arc::new(registries);
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    let r = ready().await;
                    let code = if r.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, Json(r))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registries = registries.clone();
                async move { render(&registries) }
            }),
        )
}

/// Serve [`router`] on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    registries: Vec<Registry>,
    ready: ReadyCheck,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "health and metrics listening");
    axum::serve(listener, router(registries, ready))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Make `span` a child of the W3C `traceparent` a request or a message carried, so that one
/// webhook is one trace across ingest, the broker and the worker. Nothing happens when traces
/// are not exported (no OpenTelemetry layer) or the traceparent is not valid.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace), Some(parent), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return;
    };
    let (Ok(trace), Ok(parent), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(parent),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let context = SpanContext::new(
        trace,
        parent,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    if context.is_valid() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
    }
}

/// The current span's W3C `traceparent`, when traces are exported: what a message carries on
/// so that the work it causes continues this trace.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}
