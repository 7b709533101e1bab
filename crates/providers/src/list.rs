//! Listing a provider's changed records, page by page, the ways public APIs paginate:
//!
//! - `page`: a page number (`?page=2&per_page=100`), ending on an empty page or at the
//!   total a header gives (WooCommerce's `X-WP-TotalPages`);
//! - `cursor`: an opaque token the body carries (`/meta/next_cursor`), sent back in a
//!   parameter;
//! - `after_id`: the last record's id sent back while the body says there is more
//!   (Stripe's `starting_after` and `has_more`);
//! - `link`: RFC 8288 `Link: <…>; rel="next"` (Shopify, GitHub), followed only on the
//!   manifest's own host so credentials never go elsewhere;
//! - `offset`: the position of the first record (`?offset=50`, or `{offset}` inside a query
//!   value: QuickBooks' `STARTPOSITION {offset} MAXRESULTS 100`, PrestaShop's
//!   `limit={offset},50`), ending on a page shorter than `size`;
//! - `none`: one page.
//!
//! Query values may also hold `{since}` (in `since_format`) or `{since:PATTERN}` (a chrono
//! pattern, UTC): the time changes are read from, the Unix epoch on a run that reads
//! everything. Answers may be JSON or XML; a list of one record that XML gives as an object,
//! and an empty list it gives as `""`, are read as lists.
//!
//! ```json
//! "list": {
//!   "method": "GET", "path": "/orders",
//!   "since_param": "modified_after", "since_format": "rfc3339",
//!   "query": {"per_page": "100", "orderby": "modified"},
//!   "items_pointer": "", "id_pointer": "/id", "version_pointer": "/date_modified_gmt",
//!   "pagination": {"style": "page", "param": "page", "total_pages_header": "X-WP-TotalPages"}
//! }
//! ```
use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use switchyard_core::ErrorClass;

use crate::{ConfigError, ProviderError, Record};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEndpoint {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    /// The query parameter that takes "changed since"; without it every run reads everything.
    #[serde(default)]
    pub since_param: Option<String>,
    #[serde(default)]
    pub since_format: SinceFormat,
    /// The IANA time zone `{since:PATTERN}` is written in, for APIs that compare local times
    /// (PrestaShop's `date_upd`); UTC by default.
    #[serde(default)]
    pub since_timezone: Option<String>,
    /// Fixed query parameters (page size, order).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Where the array of records is in the body; `""` for a body that is the array.
    #[serde(default)]
    pub items_pointer: String,
    /// Where a record's id is, in the record.
    #[serde(default = "id_pointer")]
    pub id_pointer: String,
    /// Where a record's version is (a number, or a timestamp), in the record.
    #[serde(default)]
    pub version_pointer: Option<String>,
    #[serde(default)]
    pub pagination: Pagination,
}

fn get() -> String {
    "GET".into()
}

fn id_pointer() -> String {
    "/id".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinceFormat {
    /// `2026-11-24T10:00:00Z`
    #[default]
    Rfc3339,
    /// Seconds since 1970.
    Unix,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    #[default]
    None,
    Page {
        #[serde(default = "page_param")]
        param: String,
        #[serde(default = "one")]
        start: u64,
        #[serde(default)]
        total_pages_header: Option<String>,
    },
    Cursor {
        param: String,
        next_pointer: String,
    },
    AfterId {
        param: String,
        has_more_pointer: String,
    },
    Link,
    Offset {
        /// The query parameter that takes the offset; without it, `{offset}` in a query
        /// value.
        #[serde(default)]
        param: Option<String>,
        /// Records per page (what the query asks for).
        size: u64,
        /// The first record's position: 0, or 1 (QuickBooks).
        #[serde(default)]
        start: u64,
    },
}

fn page_param() -> String {
    "page".into()
}

fn one() -> u64 {
    1
}

fn pointer_ok(p: &str, empty_ok: bool) -> bool {
    (empty_ok && p.is_empty()) || p.starts_with('/')
}

impl ListEndpoint {
    pub(crate) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !pointer_ok(&self.items_pointer, true) {
            return Err(ConfigError::new(
                format!("{at}.items_pointer"),
                "a JSON pointer starts with `/` (or is empty for a body that is the array)",
            ));
        }
        for (f, p) in [
            ("id_pointer", Some(&self.id_pointer)),
            ("version_pointer", self.version_pointer.as_ref()),
        ] {
            if let Some(p) = p
                && !pointer_ok(p, false)
            {
                return Err(ConfigError::new(
                    format!("{at}.{f}"),
                    "a JSON pointer starts with `/`",
                ));
            }
        }
        if let Some(z) = &self.since_timezone
            && z.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(ConfigError::new(
                format!("{at}.since_timezone"),
                format!("`{z}` is not an IANA time zone (e.g. Europe/Lisbon)"),
            ));
        }
        if let Pagination::Offset { param, size, .. } = &self.pagination {
            if *size == 0 || *size > 10_000 {
                return Err(ConfigError::new(
                    format!("{at}.pagination.size"),
                    "from 1 to 10000 records a page",
                ));
            }
            if param.is_none() && !self.query.values().any(|v| v.contains("{offset}")) {
                return Err(ConfigError::new(
                    format!("{at}.pagination"),
                    "give the offset a `param`, or put `{offset}` in a query value",
                ));
            }
        }
        match &self.pagination {
            Pagination::Cursor {
                next_pointer: p, ..
            }
            | Pagination::AfterId {
                has_more_pointer: p,
                ..
            } if !pointer_ok(p, false) => Err(ConfigError::new(
                format!("{at}.pagination"),
                "a JSON pointer starts with `/`",
            )),
            _ => Ok(()),
        }
    }

    /// The URL of one page.
    pub(crate) fn page_url(
        &self,
        base: &str,
        origin: &url::Url,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
    ) -> Result<url::Url, ProviderError> {
        let bad = |m: String| ProviderError::new(ErrorClass::Permanent, m);
        if let (Pagination::Link, Some(next)) = (&self.pagination, cursor) {
            // The provider's own next link, with every parameter it needs.
            let u = url::Url::parse(next).map_err(|e| {
                bad(format!(
                    "the provider's next link `{next}` is not a URL: {e}"
                ))
            })?;
            if u.origin() != origin.origin() {
                return Err(bad(format!(
                    "the provider's next link points to another host ({next}); not followed"
                )));
            }
            return Ok(u);
        }
        let mut u = url::Url::parse(base).map_err(|e| bad(format!("bad list URL: {e}")))?;
        let offset = match &self.pagination {
            Pagination::Offset { start, .. } => {
                Some(cursor.and_then(|c| c.parse::<u64>().ok()).unwrap_or(*start))
            }
            _ => None,
        };
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in &self.query {
                q.append_pair(k, &self.fill(v, since, offset));
            }
            if let (Some(p), Some(t)) = (&self.since_param, since) {
                let v = match self.since_format {
                    SinceFormat::Rfc3339 => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    SinceFormat::Unix => t.timestamp().to_string(),
                };
                q.append_pair(p, &v);
            }
            match (&self.pagination, cursor) {
                (Pagination::Page { param, start, .. }, c) => {
                    let page = c.map(str::to_owned).unwrap_or_else(|| start.to_string());
                    q.append_pair(param, &page);
                }
                (Pagination::Cursor { param, .. } | Pagination::AfterId { param, .. }, Some(c)) => {
                    q.append_pair(param, c);
                }
                (Pagination::Offset { param: Some(p), .. }, _) => {
                    q.append_pair(p, &offset.unwrap_or_default().to_string());
                }
                _ => {}
            }
        }
        Ok(u)
    }

    /// A query value with `{since}`, `{since:PATTERN}` and `{offset}` filled in.
    fn fill(&self, v: &str, since: Option<DateTime<Utc>>, offset: Option<u64>) -> String {
        if !v.contains('{') {
            return v.to_owned();
        }
        let t = since.unwrap_or(DateTime::UNIX_EPOCH);
        let mut out = v.replace("{offset}", &offset.unwrap_or_default().to_string());
        while let Some(at) = out.find("{since") {
            let Some(end) = out[at..].find('}').map(|e| at + e) else {
                break;
            };
            let spec = &out[at + "{since".len()..end];
            let text = match spec.strip_prefix(':') {
                Some(pattern) => {
                    let mut text = String::new();
                    use std::fmt::Write as _;
                    let zone = self
                        .since_timezone
                        .as_deref()
                        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
                        .unwrap_or(chrono_tz::UTC);
                    if write!(text, "{}", t.with_timezone(&zone).format(pattern)).is_err() {
                        text.clear();
                    }
                    text
                }
                None => match self.since_format {
                    SinceFormat::Rfc3339 => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    SinceFormat::Unix => t.timestamp().to_string(),
                },
            };
            out.replace_range(at..=end, &text);
        }
        out
    }

    /// The records of a page, and the next page's cursor.
    pub(crate) fn read_page(
        &self,
        headers: &HeaderMap,
        body: &str,
        cursor: Option<&str>,
        origin: &url::Url,
    ) -> Result<(Vec<Record>, Option<String>), String> {
        let json: Value = crate::rest::decode(body)
            .ok_or_else(|| "the provider's list answer is neither JSON nor XML".to_owned())?;
        let found = if self.items_pointer.is_empty() {
            Some(&json)
        } else {
            json.pointer(&self.items_pointer)
        };
        let one;
        let items: &[Value] = match found {
            Some(Value::Array(items)) => items,
            // XML: one record is an element, not a list of one; no record an empty element.
            Some(o @ Value::Object(_)) if !self.items_pointer.is_empty() => {
                one = [o.clone()];
                &one
            }
            Some(Value::String(s)) if s.is_empty() => &[],
            // Nothing there, in an empty parent: no records (XML's `<products/>`,
            // QuickBooks' `"QueryResponse": {}`).
            None if self
                .items_pointer
                .rsplit_once('/')
                .and_then(|(parent, _)| json.pointer(parent))
                .is_some_and(|p| {
                    p.as_str() == Some("") || p.as_object().is_some_and(|o| o.is_empty())
                }) =>
            {
                &[]
            }
            _ => {
                return Err(format!(
                    "the provider's list answer has no array of records at `{}`",
                    self.items_pointer
                ));
            }
        };
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let id = match item.pointer(&self.id_pointer) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(format!(
                        "a record in the provider's list has no id at `{}`",
                        self.id_pointer
                    ));
                }
            };
            let version = self
                .version_pointer
                .as_ref()
                .and_then(|p| item.pointer(p))
                .and_then(version_of);
            records.push(Record {
                id,
                version,
                payload: item.clone(),
            });
        }
        let next = match &self.pagination {
            Pagination::None => None,
            Pagination::Page {
                start,
                total_pages_header,
                ..
            } => {
                let current: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(*start);
                let total: Option<u64> = total_pages_header
                    .as_ref()
                    .and_then(|h| headers.get(h.as_str()))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                // The last page's number: `start + total - 1` (checked: a header may say
                // anything).
                let more = match total {
                    Some(t) => start
                        .checked_add(t)
                        .is_none_or(|end| current < end.saturating_sub(1)),
                    None => !records.is_empty(),
                };
                more.then(|| current.checked_add(1))
                    .flatten()
                    .map(|n| n.to_string())
            }
            Pagination::Cursor { next_pointer, .. } => match json.pointer(next_pointer) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            Pagination::AfterId {
                has_more_pointer, ..
            } => {
                let more = json.pointer(has_more_pointer).and_then(Value::as_bool) == Some(true);
                if more && records.is_empty() {
                    return Err("the provider says it has more records but sent none".into());
                }
                more.then(|| records.last().map(|r| r.id.clone())).flatten()
            }
            Pagination::Offset { size, start, .. } => {
                let current: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(*start);
                // A full page may have more after it; a shorter one is the last.
                (records.len() as u64 >= *size)
                    .then(|| current.checked_add(*size))
                    .flatten()
                    .map(|n| n.to_string())
            }
            Pagination::Link => headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link)
                .map(|l| match url::Url::parse(&l) {
                    Ok(_) => l,
                    // A relative link: resolve against the manifest's base URL.
                    Err(_) => origin.join(&l).map(String::from).unwrap_or(l),
                }),
        };
        Ok((records, next))
    }
}

/// A version: a number, an RFC 3339 timestamp, or a timestamp without zone read as UTC
/// (WooCommerce's `date_modified_gmt`), as microseconds.
pub(crate) fn version_of(v: &Value) -> Option<i64> {
    let bounded = |n: i64| {
        (0..=switchyard_core::inbound::MAX_VERSION)
            .contains(&n)
            .then_some(n)
    };
    match v {
        Value::Number(n) => n.as_i64().and_then(bounded),
        Value::String(s) => switchyard_core::inbound::parse_version(s).or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
                .ok()
                .and_then(|t| bounded(t.and_utc().timestamp_micros()))
        }),
        _ => None,
    }
}

/// The `rel="next"` target of one `Link` header value.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, LINK};
    use serde_json::json;

    fn endpoint(v: Value) -> ListEndpoint {
        let e: ListEndpoint = serde_json::from_value(v).unwrap();
        e.validate("list").unwrap();
        e
    }

    fn origin() -> url::Url {
        url::Url::parse("https://shop.example.com/api").unwrap()
    }

    #[test]
    fn page_numbers_stop_at_the_total_pages_header() {
        let e = endpoint(json!({"path": "/orders", "since_param": "modified_after",
            "query": {"per_page": "2"}, "version_pointer": "/date_modified_gmt",
            "pagination": {"style": "page", "total_pages_header": "X-WP-TotalPages"}}));
        let since = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let u = e
            .page_url(
                "https://shop.example.com/api/orders",
                &origin(),
                Some(since),
                None,
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://shop.example.com/api/orders?per_page=2&modified_after=2026-11-01T00%3A00%3A00Z&page=1"
        );
        let mut h = HeaderMap::new();
        h.insert("X-WP-TotalPages", HeaderValue::from_static("2"));
        let body =
            json!([{"id": 7, "date_modified_gmt": "2026-11-02T10:00:00"}, {"id": 8}]).to_string();
        let (records, next) = e.read_page(&h, &body, None, &origin()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "7");
        assert_eq!(
            records[0].version,
            Some(
                DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
                    .unwrap()
                    .timestamp_micros()
            )
        );
        assert_eq!(next.as_deref(), Some("2"));
        let (_, next) = e.read_page(&h, &body, Some("2"), &origin()).unwrap();
        assert_eq!(next, None, "page 2 of 2 is the last");
        let (_, next) = e
            .read_page(&HeaderMap::new(), "[]", Some("5"), &origin())
            .unwrap();
        assert_eq!(next, None, "without the header, an empty page is the last");
    }

    #[test]
    fn cursor_after_id_and_link_styles() {
        let c = endpoint(json!({"path": "/x", "items_pointer": "/data",
            "pagination": {"style": "cursor", "param": "cursor", "next_pointer": "/meta/next"}}));
        let (r, next) = c
            .read_page(
                &HeaderMap::new(),
                &json!({"data": [{"id": "a"}], "meta": {"next": "tok"}}).to_string(),
                None,
                &origin(),
            )
            .unwrap();
        assert_eq!((r.len(), next.as_deref()), (1, Some("tok")));
        let u = c
            .page_url(
                "https://shop.example.com/api/x",
                &origin(),
                None,
                Some("tok"),
            )
            .unwrap();
        assert_eq!(u.query(), Some("cursor=tok"));

        let s = endpoint(json!({"path": "/v1/customers", "items_pointer": "/data",
            "pagination": {"style": "after_id", "param": "starting_after", "has_more_pointer": "/has_more"}}));
        let (_, next) = s.read_page(&HeaderMap::new(), &json!({"object": "list", "data": [{"id": "cus_1"}, {"id": "cus_2"}], "has_more": true}).to_string(), None, &origin()).unwrap();
        assert_eq!(next.as_deref(), Some("cus_2"));
        let (_, next) = s
            .read_page(
                &HeaderMap::new(),
                &json!({"data": [{"id": "cus_3"}], "has_more": false}).to_string(),
                Some("cus_2"),
                &origin(),
            )
            .unwrap();
        assert_eq!(next, None);

        let l = endpoint(
            json!({"path": "/orders.json", "items_pointer": "/orders", "pagination": {"style": "link"}}),
        );
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static("<https://shop.example.com/api/orders.json?page_info=abc&limit=2>; rel=\"next\", <https://shop.example.com/api/orders.json?page_info=xyz>; rel=\"previous\""));
        let (_, next) = l
            .read_page(&h, r#"{"orders": []}"#, None, &origin())
            .unwrap();
        assert_eq!(
            next.as_deref(),
            Some("https://shop.example.com/api/orders.json?page_info=abc&limit=2")
        );
        let err = l
            .page_url("", &origin(), None, Some("https://evil.example.net/steal"))
            .unwrap_err();
        assert!(err.message.contains("another host"), "{}", err.message);
    }

    #[test]
    fn a_page_without_records_or_ids_is_an_error_that_says_where() {
        let e = endpoint(json!({"path": "/x", "items_pointer": "/data"}));
        let err = e
            .read_page(&HeaderMap::new(), r#"{"items": []}"#, None, &origin())
            .unwrap_err();
        assert!(err.contains("/data"), "{err}");
        let err = e
            .read_page(
                &HeaderMap::new(),
                r#"{"data": [{"name": "x"}]}"#,
                None,
                &origin(),
            )
            .unwrap_err();
        assert!(err.contains("no id at `/id`"), "{err}");
        let bad: Result<ListEndpoint, _> =
            serde_json::from_value(json!({"path": "/x", "pagination": {"style": "sideways"}}));
        assert!(bad.is_err());
    }

    #[test]
    fn offsets_and_times_fill_query_values() {
        let e = endpoint(json!({"path": "/q",
            "query": {"q": "x > '{since:%Y-%m-%d %H:%M:%S}' START {offset}", "t": "{since}"},
            "pagination": {"style": "offset", "size": 2, "start": 1}}));
        let origin = url::Url::parse("https://api.example.com/").unwrap();
        // A run that reads everything reads what changed since the epoch.
        let u = e
            .page_url("https://api.example.com/q", &origin, None, None)
            .unwrap();
        let q: BTreeMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(q["q"], "x > '1970-01-01 00:00:00' START 1");
        assert_eq!(q["t"], "1970-01-01T00:00:00Z");
        let since = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .to_utc();
        let u = e
            .page_url("https://api.example.com/q", &origin, Some(since), Some("3"))
            .unwrap();
        let q: BTreeMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(q["q"], "x > '2026-11-20 10:00:00' START 3");
        // A full page has a next one; a short one is the last.
        let full = json!([{"id": 1}, {"id": 2}]).to_string();
        let (_, next) = e
            .read_page(&HeaderMap::new(), &full, Some("3"), &origin)
            .unwrap();
        assert_eq!(next.as_deref(), Some("5"));
        let short = json!([{"id": 1}]).to_string();
        assert_eq!(
            e.read_page(&HeaderMap::new(), &short, Some("5"), &origin)
                .unwrap()
                .1,
            None
        );
        // A local time for APIs that compare them (PrestaShop in Lisbon, summer and winter).
        let lisbon = endpoint(json!({"path": "/q", "since_timezone": "Europe/Lisbon",
            "query": {"f": ">[{since:%Y-%m-%d %H:%M:%S}]"}}));
        let at = |t: &str| {
            let u = lisbon
                .page_url(
                    "https://api.example.com/q",
                    &origin,
                    Some(DateTime::parse_from_rfc3339(t).unwrap().to_utc()),
                    None,
                )
                .unwrap();
            u.query_pairs()
                .find(|(k, _)| k == "f")
                .unwrap()
                .1
                .into_owned()
        };
        assert_eq!(at("2026-07-01T10:00:00Z"), ">[2026-07-01 11:00:00]");
        assert_eq!(at("2026-12-01T10:00:00Z"), ">[2026-12-01 10:00:00]");
        // An offset needs somewhere to go.
        let bad: ListEndpoint = serde_json::from_value(json!({"path": "/q",
            "pagination": {"style": "offset", "size": 2}}))
        .unwrap();
        assert!(bad.validate("list").is_err());
    }

    #[test]
    fn an_absurd_total_pages_header_neither_overflows_nor_pages_for_ever() {
        let e = endpoint(json!({"path": "/orders",
            "pagination": {"style": "page", "total_pages_header": "X-WP-TotalPages", "start": 2}}));
        let origin = url::Url::parse("https://api.example.com/").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "X-WP-TotalPages",
            HeaderValue::from_static("18446744073709551615"),
        );
        let page = json!([{"id": 1}]).to_string();
        let (_, next) = e
            .read_page(&h, &page, Some("18446744073709551615"), &origin)
            .unwrap();
        assert_eq!(next, None, "no page after the last number there is");
        let (_, next) = e.read_page(&h, &page, Some("5"), &origin).unwrap();
        assert_eq!(next.as_deref(), Some("6"));
    }
}
