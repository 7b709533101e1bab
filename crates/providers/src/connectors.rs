//! Built-in connectors: a provider the hub knows by name (`quickbooks-online`,
//! `prestashop`, `moloni`), made only from the kit: a REST manifest template
//! (`connectors/<name>.json`), the parameters an account fills in, the credentials it needs
//! and the limits the vendor documents. No code of its own: if a connector needs something
//! the manifest cannot say, the kit grows, not the connector.
//!
//! An integration's settings are the parameters (`realm_id`, `base_url`, …), optionally
//! `bodies` (an entity's field map replacing the connector's, for events of another shape),
//! and the common settings (`rate_limit`, `concurrency`, …; the connector's documented limits
//! are their defaults).
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::{BuildContext, ConfigError, Connector, Credentials, ProviderInfo, ProviderKind};

/// A connector's template, as its JSON file says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Where every fact in the file comes from (the vendor's documentation).
    #[serde(rename = "$sources")]
    pub sources: Vec<String>,
    pub parameters: BTreeMap<String, Parameter>,
    /// Credential name → what it is.
    pub credentials: BTreeMap<String, String>,
    /// Common settings the connector sets unless the integration does (`rate_limit`,
    /// `concurrency`).
    #[serde(default)]
    pub limits: Map<String, Value>,
    /// What each entity expects in an event's data, for the README and `connectors show`.
    pub entities: BTreeMap<String, String>,
    /// What its operations send on once they are settled, by entity (routes take them as
    /// events from the integration).
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    pub manifest: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub description: String,
    #[serde(default)]
    pub default: Option<String>,
}

/// One built-in connector.
pub struct ConnectorKind {
    info: &'static ProviderInfo,
    source: &'static str,
    template: OnceLock<Template>,
}

impl ConnectorKind {
    const fn new(info: &'static ProviderInfo, source: &'static str) -> ConnectorKind {
        ConnectorKind {
            info,
            source,
            template: OnceLock::new(),
        }
    }

    pub fn template(&self) -> &Template {
        self.template.get_or_init(|| {
            serde_json::from_str(self.source).unwrap_or_else(|e| {
                panic!(
                    "the built-in connector {}'s template is broken: {e}",
                    self.info.name
                )
            })
        })
    }

    /// The REST manifest for an integration's connector settings.
    pub fn manifest(&self, settings: &Value) -> Result<Value, ConfigError> {
        let t = self.template();
        let obj = settings
            .as_object()
            .ok_or_else(|| ConfigError::new("settings", "must be a JSON object"))?;
        let mut values = Map::new();
        for (name, p) in &t.parameters {
            let v = match obj.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("settings.{name}"),
                        format!("must be a string: {}", p.description),
                    ));
                }
                None => match &p.default {
                    Some(d) => d.clone(),
                    None => {
                        return Err(ConfigError::new(
                            format!("settings.{name}"),
                            format!(
                                "required by the {} connector: {}",
                                self.info.name, p.description
                            ),
                        ));
                    }
                },
            };
            values.insert(name.clone(), Value::String(v));
        }
        for key in obj.keys() {
            if key != "bodies" && !t.parameters.contains_key(key) {
                return Err(ConfigError::new(
                    format!("settings.{key}"),
                    format!(
                        "not a setting of the {} connector; its settings: {}, bodies (and the common ones: {})",
                        self.info.name,
                        t.parameters.keys().cloned().collect::<Vec<_>>().join(", "),
                        crate::COMMON_SETTINGS.join(", ")
                    ),
                ));
            }
        }
        let mut manifest = t.manifest.clone();
        manifest["values"] = Value::Object(values);
        if let Some(bodies) = obj.get("bodies") {
            let bodies = bodies.as_object().ok_or_else(|| {
                ConfigError::new("settings.bodies", "an object: entity → field map")
            })?;
            for (entity, body) in bodies {
                let e = manifest
                    .get_mut("entities")
                    .and_then(|es| es.get_mut(entity))
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("settings.bodies.{entity}"),
                            format!(
                                "the {} connector has no entity `{entity}`; it has {}",
                                self.info.name,
                                t.entities.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })?;
                e["body"] = body.clone();
            }
        }
        Ok(manifest)
    }

    /// The connector's documented limits under `settings` (the integration's own win).
    pub fn with_limits(&self, settings: &Value) -> Value {
        let mut out = settings.clone();
        if let Value::Object(o) = &mut out {
            for (k, v) in &self.template().limits {
                o.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// What `switchyard connectors show` prints.
    pub fn describe(&self) -> Value {
        let t = self.template();
        serde_json::json!({
            "name": self.info.name,
            "description": self.info.description,
            "settings": t.parameters.iter().map(|(k, p)| (k.clone(), serde_json::json!({
                "description": p.description,
                "default": p.default,
                "required": p.default.is_none(),
            }))).collect::<Map<_, _>>(),
            "credentials": t.credentials,
            "limits": t.limits,
            "entities": t.entities,
            "operations": t.manifest.get("operations").and_then(Value::as_object).map(|ops| {
                ops.iter()
                    .filter_map(|(name, op)| {
                        serde_json::from_value::<crate::operations::OperationSpec>(op.clone())
                            .ok()
                            .map(|spec| (name.clone(), serde_json::to_value(spec.info(name)).unwrap_or_default()))
                    })
                    .collect::<Map<_, _>>()
            }),
            "events": t.events,
            "sources": t.sources,
        })
    }
}

impl ProviderKind for ConnectorKind {
    fn info(&self) -> &'static ProviderInfo {
        self.info
    }
    fn validate(&self, settings: &Value) -> Result<(), ConfigError> {
        crate::rest::Manifest::parse(&self.manifest(settings)?).map(|_| ())
    }
    fn can_list(&self, settings: &Value, entity: &str) -> bool {
        self.manifest(settings)
            .is_ok_and(|m| crate::rest::RestKind.can_list(&m, entity))
    }
    fn can_lookup(&self, settings: &Value, entity: &str) -> bool {
        self.manifest(settings)
            .is_ok_and(|m| crate::rest::RestKind.can_lookup(&m, entity))
    }
    fn build(
        &self,
        settings: &Value,
        credentials: Credentials,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Connector>, ConfigError> {
        for name in self.template().credentials.keys() {
            if credentials.get(name).is_none() {
                return Err(ConfigError::new(
                    format!("credentials.{name}"),
                    format!(
                        "required by the {} connector: {}",
                        self.info.name,
                        self.template().credentials[name]
                    ),
                ));
            }
        }
        crate::rest::RestKind.build_named(
            &self.manifest(settings)?,
            credentials,
            ctx,
            self.info.name,
        )
    }
    fn defaults(&self, settings: &Value) -> Value {
        self.with_limits(settings)
    }
    fn manifest(&self, settings: &Value) -> Option<Value> {
        ConnectorKind::manifest(self, settings).ok()
    }
    fn describe(&self) -> Value {
        ConnectorKind::describe(self)
    }
}

/// A built-in connector: its registry entry and its template file.
macro_rules! connector {
    ($(#[$doc:meta])* $kind:ident, $name:literal, $description:literal, $settings:literal, $file:literal) => {
        $(#[$doc])*
        pub static $kind: ConnectorKind = ConnectorKind::new(
            &ProviderInfo {
                name: $name,
                is_target: true,
                description: $description,
                settings: $settings,
            },
            include_str!($file),
        );
    };
}

connector!(
    QUICKBOOKS,
    "quickbooks-online",
    "QuickBooks Online (Intuit): customers, items and invoices with their lines; OAuth2 with consent",
    "realm_id (required), base_url, minor_version, income_account_id, authorize_url, token_url, bodies",
    "../connectors/quickbooks-online.json"
);

connector!(
    PRESTASHOP,
    "prestashop",
    "PrestaShop webservice (XML): products found by reference, stock through stock_availables, orders made from a cart",
    "base_url (required), language_id, category_id, timezone, currency_id, carrier_id, payment_module, payment_name, order_state_id, bodies",
    "../connectors/prestashop.json"
);

connector!(
    MPESA,
    "mpesa-daraja",
    "Safaricom M-Pesa Daraja: M-Pesa Express (STK push) charges settled by M-Pesa's callback or by a query; OAuth2 client credentials",
    "business_short_code (required), party_b (required), transaction_type, base_url, query_after_secs (the callback URL is a credential: it carries the integration's key)",
    "../connectors/mpesa-daraja.json"
);

connector!(
    PESAPAL,
    "pesapal",
    "Pesapal 3.0: orders paid on Pesapal's page, settled by its IPN (a GET) and GetTransactionStatus; IPN registration",
    "callback_url (required), ipn_id, currency, base_url, query_after_secs",
    "../connectors/pesapal.json"
);

connector!(
    FLUTTERWAVE,
    "flutterwave",
    "Flutterwave v3: payment links settled by its webhook (verif-hash) and a verification by tx_ref",
    "redirect_url (required), currency, title, base_url, query_after_secs",
    "../connectors/flutterwave.json"
);

connector!(
    AFRICASTALKING,
    "africastalking",
    "Africa's Talking SMS: messages sent with a form post and settled by delivery reports",
    "username (required), base_url, deliver_within_secs",
    "../connectors/africastalking.json"
);

connector!(
    WHATSAPP,
    "whatsapp-cloud",
    "WhatsApp Cloud API (Meta): text and template messages settled by delivery statuses",
    "phone_number_id (required), api_version, language, base_url, deliver_within_secs",
    "../connectors/whatsapp-cloud.json"
);

connector!(
    PAYME,
    "payme",
    "Payme (Uzbekistan): checkout links for orders, paid through Payme's Merchant API (JSON-RPC) that calls the hub",
    "merchant_id (required), checkout_url, timeout_secs",
    "../connectors/payme.json"
);

connector!(
    CLICK,
    "click",
    "Click (Uzbekistan): payment links for orders, paid through Click's SHOP API (Prepare and Complete) that calls the hub",
    "service_id (required), merchant_id (required), return_url, checkout_url, timeout_secs",
    "../connectors/click.json"
);

connector!(
    MOLONI,
    "moloni",
    "Moloni (Portuguese invoicing): customers, products and invoices with lines; OAuth2 password grant",
    "company_id (required), document_set_id (required), base_url, tax_id, maturity_date_id, payment_method_id, category_id, unit_id, country_id, language_id, invoice_status, bodies",
    "../connectors/moloni.json"
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_template_reads_and_its_defaults_make_a_valid_manifest() {
        for kind in [
            &QUICKBOOKS,
            &PRESTASHOP,
            &MOLONI,
            &MPESA,
            &PESAPAL,
            &FLUTTERWAVE,
            &AFRICASTALKING,
            &WHATSAPP,
            &PAYME,
            &CLICK,
        ] {
            let t = kind.template();
            assert!(!t.sources.is_empty(), "{} cites no source", kind.info.name);
            // Required parameters filled with a placeholder: the manifest must parse.
            let settings: Map<String, Value> = t
                .parameters
                .iter()
                .filter(|(_, p)| p.default.is_none())
                .map(|(k, _)| {
                    (
                        k.clone(),
                        json!(if k == "base_url" {
                            "https://shop.example"
                        } else {
                            "7"
                        }),
                    )
                })
                .collect();
            kind.validate(&Value::Object(settings.clone()))
                .unwrap_or_else(|e| panic!("{}: {e}", kind.info.name));
            for entity in t.entities.keys() {
                assert!(
                    t.manifest["entities"].get(entity).is_some(),
                    "{} documents `{entity}` but has no endpoints for it",
                    kind.info.name
                );
            }
        }
    }

    #[test]
    fn settings_are_checked_by_name() {
        let e = QUICKBOOKS.validate(&json!({})).unwrap_err();
        assert_eq!(e.field, "settings.realm_id");
        let e = QUICKBOOKS
            .validate(&json!({"realm_id": "1", "realmid": "2"}))
            .unwrap_err();
        assert_eq!(e.field, "settings.realmid");
        let e = QUICKBOOKS
            .validate(&json!({"realm_id": "1", "bodies": {"vendor": {}}}))
            .unwrap_err();
        assert_eq!(e.field, "settings.bodies.vendor");
        // A body of the integration's own replaces the connector's.
        let m = QUICKBOOKS
            .manifest(
                &json!({"realm_id": "1", "bodies": {"customer": {"DisplayName": "/full_name"}}}),
            )
            .unwrap();
        assert_eq!(
            m["entities"]["customer"]["body"],
            json!({"DisplayName": "/full_name"})
        );
        assert_eq!(m["values"]["realm_id"], json!("1"));
        // Documented limits are defaults; the integration's own win.
        let s = QUICKBOOKS.with_limits(&json!({"realm_id": "1", "concurrency": 3}));
        assert_eq!(s["concurrency"], json!(3));
        assert_eq!(s["rate_limit"], json!({"limit": 500, "per": "minute"}));
    }
}
