//! TLS to the services, checked at start: the build speaks TLS (rustls) to PostgreSQL
//! (`sslmode=` in the URL), Redis (`rediss://`) and RabbitMQ (`amqps://`). A URL that asks
//! for TLS in a way that cannot work (a certificate file that is not there, a mode or scheme
//! the drivers do not know) is refused when the process starts, not at its first connection.
use std::path::Path;

const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// `postgres://…?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem`
pub fn check_database_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" if !SSL_MODES.contains(&v.as_ref()) => {
                return Err(format!(
                    "asks for sslmode `{v}`; the modes are {}",
                    SSL_MODES.join(", ")
                ));
            }
            "sslrootcert" | "sslcert" | "sslkey" if !Path::new(v.as_ref()).is_file() => {
                return Err(format!("names {k} {v}, which is not a readable file"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `redis://` or `rediss://` (TLS); empty: breakers and limits per process.
pub fn check_redis_url(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Ok(());
    }
    let scheme = raw.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "redis" | "rediss" | "unix" | "redis+unix" => Ok(()),
        _ => Err(format!(
            "has scheme `{scheme}`; use redis:// (plain) or rediss:// (TLS)"
        )),
    }
}
