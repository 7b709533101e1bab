//! Providers that drive their own transactions by calling the hub: Payme's Merchant API
//! (JSON-RPC 2.0 over POST, `Authorization: Basic Paycom:<key>`). Payme asks whether an
//! order may be paid (`CheckPerformTransaction`), opens a transaction on it
//! (`CreateTransaction`), performs or cancels it, and reads it back (`CheckTransaction`,
//! `GetStatement`). The order is a pending operation call (the connector's `charge`, whose
//! reference is the order's id); performing it settles the call — the payment goes on
//! through the integration's routes, durably — before Payme is answered. Every answer is
//! HTTP 200 with `result` or `error` as Payme documents them
//! (developer.help.paycom.uz › Merchant API: methods and errors).
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};
use switchyard_providers::operations::{MerchantProtocol, MerchantSpec, Outcome, SettleSpec, text};
use switchyard_store::OperationCall;
use tracing::{info, warn};

use crate::sources::Source;
use crate::{ApiError, SharedState};

/// How long Payme gives a created transaction to be performed (12 hours, in ms).
const PAYME_TIMEOUT_MS: i64 = 43_200_000;

/// A Payme error: its code, its message in the three languages Payme shows, and the
/// account field at fault (`data`).
struct PaymeError {
    code: i64,
    en: &'static str,
    ru: &'static str,
    uz: &'static str,
    data: Option<String>,
}

const fn err(code: i64, en: &'static str, ru: &'static str, uz: &'static str) -> PaymeError {
    PaymeError {
        code,
        en,
        ru,
        uz,
        data: None,
    }
}

const UNAUTHORIZED: PaymeError = err(
    -32504,
    "Insufficient privileges to perform this method",
    "Недостаточно привилегий для выполнения метода",
    "Usulni bajarish uchun huquqlar yetarli emas",
);
const PARSE: PaymeError = err(
    -32700,
    "Parse error",
    "Ошибка разбора JSON",
    "JSON tahlil xatosi",
);
const NO_METHOD: PaymeError = err(
    -32601,
    "Method not found",
    "Метод не найден",
    "Usul topilmadi",
);
const SYSTEM: PaymeError = err(-32400, "System error", "Системная ошибка", "Tizim xatosi");
const AMOUNT: PaymeError = err(
    -31001,
    "Incorrect amount",
    "Неверная сумма",
    "Noto'g'ri summa",
);
const NO_TRANSACTION: PaymeError = err(
    -31003,
    "Transaction not found",
    "Транзакция не найдена",
    "Tranzaksiya topilmadi",
);
const CANNOT: PaymeError = err(
    -31008,
    "Unable to perform operation",
    "Невозможно выполнить операцию",
    "Amalni bajarib bo'lmaydi",
);

fn account_error(
    code: i64,
    en: &'static str,
    ru: &'static str,
    uz: &'static str,
    field: &str,
) -> PaymeError {
    PaymeError {
        data: Some(field.to_owned()),
        ..err(code, en, ru, uz)
    }
}

fn answer(id: &Value, r: Result<Value, PaymeError>) -> Response {
    let body = match r {
        Ok(result) => json!({"result": result, "id": id}),
        Err(e) => json!({
            "error": {"code": e.code, "message": {"ru": e.ru, "uz": e.uz, "en": e.en}, "data": e.data},
            "id": id,
        }),
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// A request that failed authentication, answered as its provider expects (Payme:
/// `-32504`; Click: `-1`, "SIGN CHECK FAILED!"; HTTP 200).
pub(crate) async fn refused(state: &SharedState, integration: &str) -> Option<Response> {
    let id = integration.parse().ok()?;
    let source = state.sources.get(id).await.ok()??;
    let (spec, _) = source.merchant.as_ref()?;
    Some(match spec.protocol {
        MerchantProtocol::Payme => answer(&Value::Null, Err(UNAUTHORIZED)),
        MerchantProtocol::Click => click_answer(&Value::Null, Err(CLICK_SIGN)),
    })
}

/// One request from a provider with a protocol of its own, authenticated.
pub(crate) async fn handle(
    state: &SharedState,
    source: &Source,
    m: &(MerchantSpec, SettleSpec),
    raw: &[u8],
) -> Result<(&'static str, Response), ApiError> {
    match m.0.protocol {
        MerchantProtocol::Payme => payme(state, source, m, raw).await,
        MerchantProtocol::Click => click(state, source, m, raw).await,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One Payme request, authenticated.
async fn payme(
    state: &SharedState,
    source: &Source,
    (spec, settle): &(MerchantSpec, SettleSpec),
    raw: &[u8],
) -> Result<(&'static str, Response), ApiError> {
    let Ok(req) = serde_json::from_slice::<Value>(raw) else {
        return Ok(("rejected", answer(&Value::Null, Err(PARSE))));
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let p = Payme {
        state,
        source,
        spec,
        settle,
    };
    let r = match method {
        "CheckPerformTransaction" => p.check_perform(&params).await,
        "CreateTransaction" => p.create(&params).await,
        "PerformTransaction" => p.perform(&params).await,
        "CancelTransaction" => p.cancel(&params).await,
        "CheckTransaction" => p.check(&params).await,
        "GetStatement" => p.statement(&params).await,
        _ => Err(NO_METHOD),
    };
    if let Err(e) = &r {
        info!(%method, code = e.code, "payme request refused");
    }
    Ok(("merchant", answer(&id, r)))
}

struct Payme<'a> {
    state: &'a SharedState,
    source: &'a Source,
    spec: &'a MerchantSpec,
    settle: &'a SettleSpec,
}

impl Payme<'_> {
    #[allow(clippy::needless_pass_by_value)] // Used as `map_err(Self::store_error)`.
    fn store_error(e: switchyard_store::StoreError) -> PaymeError {
        warn!(error = %e, "payme request failed on the database");
        SYSTEM
    }

    /// The order `params.account.<field>` names, unpaid, for `params.amount`.
    async fn order(&self, params: &Value) -> Result<OperationCall, PaymeError> {
        let field = &self.spec.account;
        let not_found = || {
            account_error(
                -31050,
                "Order not found",
                "Заказ не найден",
                "Buyurtma topilmadi",
                field,
            )
        };
        let order = params
            .pointer(&format!("/account/{field}"))
            .and_then(text)
            .ok_or_else(not_found)?;
        let call = self
            .state
            .store
            .call_by_reference(self.source.id, &order)
            .await
            .map_err(Self::store_error)?
            .filter(|c| c.operation == self.spec.operation)
            .ok_or_else(not_found)?;
        if call.status != "pending" {
            return Err(account_error(
                -31051,
                "The order is already paid or cancelled",
                "Заказ уже оплачен или отменён",
                "Buyurtma allaqachon to'langan yoki bekor qilingan",
                field,
            ));
        }
        let wanted = call.input.get("amount").and_then(text);
        let given = params.get("amount").and_then(text);
        if wanted.is_none() || wanted != given {
            return Err(AMOUNT);
        }
        Ok(call)
    }

    async fn check_perform(&self, params: &Value) -> Result<Value, PaymeError> {
        let call = self.order(params).await?;
        if call
            .provider_state
            .as_ref()
            .is_some_and(|s| s["state"] == 1)
        {
            return Err(self.busy());
        }
        Ok(json!({"allow": true}))
    }

    fn busy(&self) -> PaymeError {
        account_error(
            -31052,
            "Another transaction is paying this order",
            "Этот заказ оплачивается другой транзакцией",
            "Bu buyurtma boshqa tranzaksiya bilan to'lanmoqda",
            &self.spec.account,
        )
    }

    async fn create(&self, params: &Value) -> Result<Value, PaymeError> {
        let tx = params.get("id").and_then(text).ok_or(NO_TRANSACTION)?;
        if let Some(c) = self.by_tx(&tx).await? {
            let s = c.provider_state.clone().unwrap_or_default();
            if s["state"] != 1 {
                return Err(CANNOT);
            }
            return Ok(
                json!({"create_time": s["create_time"], "transaction": c.id.to_string(), "state": 1}),
            );
        }
        let call = self.order(params).await?;
        let state = json!({
            "id": tx, "time": params.get("time"), "amount": params.get("amount"),
            "account": params.get("account"), "create_time": now_ms(), "perform_time": 0,
            "cancel_time": 0, "state": 1, "reason": null,
        });
        let taken = self
            .state
            .store
            .set_provider_state(call.id, &tx, &state)
            .await
            .map_err(Self::store_error)?;
        if !taken {
            return Err(self.busy());
        }
        info!(call = %call.id, %tx, "payme transaction created");
        Ok(
            json!({"create_time": state["create_time"], "transaction": call.id.to_string(), "state": 1}),
        )
    }

    async fn by_tx(&self, tx: &str) -> Result<Option<OperationCall>, PaymeError> {
        self.state
            .store
            .call_by_provider_tx(self.source.id, tx)
            .await
            .map_err(Self::store_error)
    }

    async fn tx(&self, params: &Value) -> Result<(OperationCall, Value), PaymeError> {
        let tx = params.get("id").and_then(text).ok_or(NO_TRANSACTION)?;
        let c = self.by_tx(&tx).await?.ok_or(NO_TRANSACTION)?;
        let s = c.provider_state.clone().unwrap_or_default();
        Ok((c, s))
    }

    /// Settle the order's call (the payment goes on through the routes, durably).
    async fn settle_call(
        &self,
        call: &OperationCall,
        succeeded: bool,
        params: &Value,
    ) -> Result<(), PaymeError> {
        switchyard_ops::calls::settle(
            &self.state.store,
            &self.state.broker,
            self.source.id,
            call,
            self.settle,
            &Outcome {
                succeeded,
                code: if succeeded { "2" } else { "-1" }.into(),
                message: Some(if succeeded { "performed" } else { "cancelled" }.into()),
            },
            params,
            "callback",
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            warn!(call = %call.id, error = %e, "a payme transaction could not be settled yet; Payme retries");
            SYSTEM
        })
    }

    async fn save(&self, call: &OperationCall, s: &Value) -> Result<(), PaymeError> {
        let tx = s["id"].as_str().unwrap_or_default();
        self.state
            .store
            .set_provider_state(call.id, tx, s)
            .await
            .map_err(Self::store_error)
            .map(|_| ())
    }

    async fn perform(&self, params: &Value) -> Result<Value, PaymeError> {
        let (call, mut s) = self.tx(params).await?;
        let reply = |s: &Value| json!({"transaction": call.id.to_string(), "perform_time": s["perform_time"], "state": s["state"]});
        if s["state"] == 2 {
            return Ok(reply(&s));
        }
        if s["state"] != 1 {
            return Err(CANNOT);
        }
        if now_ms() - s["create_time"].as_i64().unwrap_or_default() > PAYME_TIMEOUT_MS {
            // Too late: cancelled (reason 4, timeout), as Payme documents.
            self.settle_call(&call, false, params).await?;
            s["state"] = json!(-1);
            s["cancel_time"] = json!(now_ms());
            s["reason"] = json!(4);
            self.save(&call, &s).await?;
            return Err(CANNOT);
        }
        self.settle_call(&call, true, params).await?;
        s["state"] = json!(2);
        s["perform_time"] = json!(now_ms());
        self.save(&call, &s).await?;
        info!(call = %call.id, "payme transaction performed");
        Ok(reply(&s))
    }

    async fn cancel(&self, params: &Value) -> Result<Value, PaymeError> {
        let (call, mut s) = self.tx(params).await?;
        let reply = |s: &Value| json!({"transaction": call.id.to_string(), "cancel_time": s["cancel_time"], "state": s["state"]});
        match s["state"].as_i64() {
            Some(-1) | Some(-2) => return Ok(reply(&s)),
            Some(1) => {
                self.settle_call(&call, false, params).await?;
                s["state"] = json!(-1);
            }
            Some(2) => {
                // A refund after the payment: the call stays succeeded; the refund goes on
                // through the routes as `refunded`.
                self.refunded(&call, params).await?;
                s["state"] = json!(-2);
            }
            _ => return Err(CANNOT),
        }
        s["cancel_time"] = json!(now_ms());
        s["reason"] = params.get("reason").cloned().unwrap_or(Value::Null);
        self.save(&call, &s).await?;
        info!(call = %call.id, state = %s["state"], "payme transaction cancelled");
        Ok(reply(&s))
    }

    async fn refunded(&self, call: &OperationCall, params: &Value) -> Result<(), PaymeError> {
        switchyard_ops::calls::deliver_about(
            &self.state.store,
            &self.state.broker,
            self.source.id,
            call,
            &self.settle.entity,
            "refunded",
            ":refund",
            json!({"settled_by": "callback", "result": params}),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            warn!(call = %call.id, error = %e, "a payme refund could not be delivered yet; Payme retries");
            SYSTEM
        })
    }

    async fn check(&self, params: &Value) -> Result<Value, PaymeError> {
        let (call, s) = self.tx(params).await?;
        Ok(json!({
            "create_time": s["create_time"], "perform_time": s["perform_time"],
            "cancel_time": s["cancel_time"], "transaction": call.id.to_string(),
            "state": s["state"], "reason": s["reason"],
        }))
    }

    async fn statement(&self, params: &Value) -> Result<Value, PaymeError> {
        let from = params.get("from").and_then(Value::as_i64).unwrap_or(0);
        let to = params.get("to").and_then(Value::as_i64).unwrap_or(i64::MAX);
        let calls = self
            .state
            .store
            .provider_transactions(self.source.id, from, to)
            .await
            .map_err(Self::store_error)?;
        let transactions: Vec<Value> = calls
            .iter()
            .filter_map(|c| {
                let s = c.provider_state.as_ref()?;
                Some(json!({
                    "id": s["id"], "time": s["time"], "amount": s["amount"], "account": s["account"],
                    "create_time": s["create_time"], "perform_time": s["perform_time"],
                    "cancel_time": s["cancel_time"], "transaction": c.id.to_string(),
                    "state": s["state"], "reason": s["reason"],
                }))
            })
            .collect();
        Ok(json!({"transactions": transactions}))
    }
}

// Click --------------------------------------------------------------------------------------
//
// Click's SHOP API (docs.click.uz › Click API): Click posts a form to the merchant's URL,
// first to prepare (`action=0`), then to complete (`action=1`) a payment of the order
// `merchant_trans_id`, each signed (`sign_string`, checked as the integration's `click`
// webhook scheme). The answer is JSON, HTTP 200: `{click_trans_id, merchant_trans_id,
// merchant_prepare_id | merchant_confirm_id, error, error_note}`, `error` 0 for success or
// one of Click's codes.

/// A Click error: its code and note, as Click's documentation lists them.
struct ClickError(i64, &'static str);

const CLICK_SIGN: ClickError = ClickError(-1, "SIGN CHECK FAILED!");
const CLICK_AMOUNT: ClickError = ClickError(-2, "Incorrect parameter amount");
const CLICK_ACTION: ClickError = ClickError(-3, "Action not found");
const CLICK_PAID: ClickError = ClickError(-4, "Already paid");
const CLICK_NO_ORDER: ClickError = ClickError(-5, "User does not exist");
const CLICK_NO_TRANSACTION: ClickError = ClickError(-6, "Transaction does not exist");
const CLICK_UPDATE: ClickError = ClickError(-7, "Failed to update user");
const CLICK_REQUEST: ClickError = ClickError(-8, "Error in request from click");
const CLICK_CANCELLED: ClickError = ClickError(-9, "Transaction cancelled");

fn click_answer(fields: &Value, r: Result<Value, ClickError>) -> Response {
    let mut body = json!({
        "click_trans_id": fields.get("click_trans_id").and_then(text).and_then(|t| t.parse::<i64>().ok()),
        "merchant_trans_id": fields.get("merchant_trans_id"),
    });
    match r {
        Ok(Value::Object(extra)) => {
            if let Value::Object(b) = &mut body {
                b.extend(extra);
                b.insert("error".into(), json!(0));
                b.insert("error_note".into(), json!("Success"));
            }
        }
        Ok(_) => {}
        Err(ClickError(code, note)) => {
            body["error"] = json!(code);
            body["error_note"] = json!(note);
        }
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// The order's amount and the form's, equal (sums, two decimals).
fn same_amount(call: &OperationCall, fields: &Value) -> bool {
    let cents = |v: Option<String>| {
        v.and_then(|t| t.trim().parse::<f64>().ok())
            .map(|a| (a * 100.0).round() as i64)
    };
    let wanted = cents(call.input.get("amount").and_then(text));
    wanted.is_some() && wanted == cents(fields.get("amount").and_then(text))
}

async fn click(
    state: &SharedState,
    source: &Source,
    (spec, settle): &(MerchantSpec, SettleSpec),
    raw: &[u8],
) -> Result<(&'static str, Response), ApiError> {
    let fields: serde_json::Map<String, Value> = url::form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    let fields = Value::Object(fields);
    let get = |k: &str| fields.get(k).and_then(text).unwrap_or_default();
    let r = async {
        let order = get("merchant_trans_id");
        if order.is_empty() || get("click_trans_id").is_empty() {
            return Err(CLICK_REQUEST);
        }
        let call = state
            .store
            .call_by_reference(source.id, &order)
            .await
            .map_err(|e| {
                warn!(error = %e, "click request failed on the database");
                CLICK_UPDATE
            })?
            .filter(|c| c.operation == spec.operation)
            .ok_or(CLICK_NO_ORDER)?;
        let tx = get("click_trans_id");
        let held = call.provider_state.clone();
        match get("action").as_str() {
            "0" => {
                match call.status.as_str() {
                    "pending" => {}
                    "succeeded" => return Err(CLICK_PAID),
                    _ => return Err(CLICK_CANCELLED),
                }
                if !same_amount(&call, &fields) {
                    return Err(CLICK_AMOUNT);
                }
                // The prepare id: a number Click sends back on Complete.
                let prepare_id = held
                    .as_ref()
                    .filter(|s| s["id"] == tx.as_str())
                    .and_then(|s| s["prepare_id"].as_i64())
                    .unwrap_or_else(|| (call.id.as_u128() & 0x000F_FFFF_FFFF_FFFF) as i64);
                let s = json!({"id": tx, "prepare_id": prepare_id, "state": "prepared",
                               "time": now_ms(), "amount": get("amount")});
                let taken = state
                    .store
                    .set_provider_state(call.id, &tx, &s)
                    .await
                    .map_err(|_| CLICK_UPDATE)?;
                if !taken {
                    // Another Click transaction prepared this order.
                    return Err(CLICK_CANCELLED);
                }
                Ok(json!({"merchant_prepare_id": prepare_id}))
            }
            "1" => {
                let s = held.filter(|s| s["id"] == tx.as_str()).ok_or(CLICK_NO_TRANSACTION)?;
                let prepare_id = s["prepare_id"].as_i64().unwrap_or_default();
                if get("merchant_prepare_id") != prepare_id.to_string() {
                    return Err(CLICK_NO_TRANSACTION);
                }
                if !same_amount(&call, &fields) {
                    return Err(CLICK_AMOUNT);
                }
                let failed_at_click = get("error").parse::<i64>().is_ok_and(|e| e < 0);
                match (call.status.as_str(), failed_at_click) {
                    ("succeeded", _) => return Err(CLICK_PAID),
                    ("pending", _) => {}
                    _ => return Err(CLICK_CANCELLED),
                }
                switchyard_ops::calls::settle(
                    &state.store,
                    &state.broker,
                    source.id,
                    &call,
                    settle,
                    &Outcome {
                        succeeded: !failed_at_click,
                        code: get("error"),
                        message: Some(get("error_note")).filter(|n| !n.is_empty()),
                    },
                    &fields,
                    "callback",
                )
                .await
                .map_err(|e| {
                    warn!(call = %call.id, error = %e, "a click payment could not be settled yet; Click retries");
                    CLICK_UPDATE
                })?;
                let mut done = s.clone();
                done["state"] = json!(if failed_at_click { "cancelled" } else { "completed" });
                state
                    .store
                    .set_provider_state(call.id, &tx, &done)
                    .await
                    .map_err(|_| CLICK_UPDATE)?;
                if failed_at_click {
                    return Err(CLICK_CANCELLED);
                }
                info!(call = %call.id, %tx, "click payment completed");
                Ok(json!({"merchant_confirm_id": prepare_id}))
            }
            _ => Err(CLICK_ACTION),
        }
    }
    .await;
    if let Err(ClickError(code, note)) = &r {
        info!(code, note, "click request refused");
    }
    Ok(("merchant", click_answer(&fields, r)))
}
