//! The management API as the CLI calls it: an operator needs Switchyard's URL and a token
//! (the admin token or a tenant's API key), not the database or the vault's keys.
use anyhow::{Context, bail};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

/// Where the API is and who is calling it.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Switchyard's API, e.g. https://switchyard.example.com.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// The admin token or a tenant's API key (default: SWITCHYARD_ADMIN_TOKEN, on a machine
    /// that runs Switchyard).
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

/// A refusal by the API, as it said it: `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Api {
    pub fn new(remote: &Remote) -> anyhow::Result<Api> {
        let token = remote
            .token
            .clone()
            .or_else(|| std::env::var("SWITCHYARD_ADMIN_TOKEN").ok())
            .filter(|t| !t.trim().is_empty())
            .context(
                "no token: give --token or SWITCHYARD_TOKEN (the admin token or a tenant's API key)",
            )?;
        let base = remote.url.trim_end_matches('/').to_owned();
        url::Url::parse(&base).with_context(|| format!("--url: `{base}` is not a URL"))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("switchyard-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Api {
            http,
            base,
            token: SecretString::from(token),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Call the API: its JSON answer (`null` for `204`), or its refusal.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.call_with(method, path, query, body, &[]).await
    }

    /// [`Api::call`] with headers of its own (an `Idempotency-Key`).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        use backon::{ConstantBuilder, Retryable};
        let idempotent = method == Method::GET;
        let send = || {
            let mut rb = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(self.token.expose_secret())
                .query(query);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb.send()
        };
        // A reading request is sent again when it could not be sent (a kept-alive connection
        // the server closed just then, a moment's outage); a change is never sent twice.
        let resp = send
            .retry(
                ConstantBuilder::default()
                    .with_delay(std::time::Duration::from_millis(200))
                    .with_max_times(3),
            )
            .when(|e: &reqwest::Error| idempotent && (e.is_connect() || e.is_request()))
            .await
            .map_err(|e| {
            let why = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.to_string());
            anyhow::anyhow!(
                "cannot reach Switchyard at {} ({why}); is it running, and is --url (SWITCHYARD_URL) right?",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.context("reading Switchyard's answer")?;
        if status.is_success() {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .with_context(|| format!("Switchyard answered {status} with something not JSON"));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = v["error"]["code"].as_str().unwrap_or("").to_owned();
        let mut message = v["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("Switchyard answered {status}"));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            message.push_str(" (check --token / SWITCHYARD_TOKEN)");
        }
        Err(Refused {
            status: status.as_u16(),
            code,
            message,
        }
        .into())
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, &[], None).await
    }

    /// An integration named by its id, `tenant/name`, or a name alone (the caller's tenant
    /// for a tenant's key; for the admin, the one integration of that name).
    pub async fn integration(&self, reference: &str) -> anyhow::Result<Value> {
        if let Ok(id) = reference.parse::<Uuid>() {
            return self.get(&format!("/v1/integrations/{id}"), &[]).await;
        }
        let mut query = Vec::new();
        let name = match reference.split_once('/') {
            Some((tenant, name)) => {
                query.push(("tenant", tenant.to_owned()));
                name
            }
            None => reference,
        };
        query.push(("name", name.to_owned()));
        let found = self.get("/v1/integrations", &query).await?;
        let list = found["integrations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match list.as_slice() {
            [] => bail!("no integration `{reference}` (name it by id or as tenant/name)"),
            [one] => Ok(one.clone()),
            many => {
                let tenants: Vec<&str> = many.iter().filter_map(|i| i["tenant"].as_str()).collect();
                bail!(
                    "several integrations are named `{name}` (tenants: {}); name one as tenant/{name}",
                    tenants.join(", ")
                )
            }
        }
    }

    /// The id of an integration named as [`Api::integration`] takes it.
    pub async fn integration_id(&self, reference: &str) -> anyhow::Result<String> {
        if reference.parse::<Uuid>().is_ok() {
            return Ok(reference.to_owned());
        }
        Ok(str_of(&self.integration(reference).await?["id"]))
    }
}

/// A JSON value as a person reads it in a table: text as is, `-` for nothing.
pub fn str_of(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
