//! A fake Kling API on 127.0.0.1: `POST /v1/videos/text2video` and
//! `GET /v1/videos/text2video/{id}` where `id` is a task id or an
//! `external_task_id` (Kling's single-task query accepts either), with
//! Kling's `{code, message, request_id, data}` envelope and error codes.
//!
//! Authentication as Kling does it: `Authorization: Bearer <JWT>`, HS256
//! signed with the secret key, `iss` = the access key, `exp`/`nbf` checked;
//! a missing, badly signed or expired token is a 401 with code 1001–1004.
//! Videos are served without auth at `/files/{key}/video.mp4`, like Kling's
//! CDN. Kling has no cancel state: [`Step::Canceled`] renders `failed`.
//! An HTTP error step of 402 renders Kling's credit exhaustion (429, code
//! 1102), 403 its "no access to the model" (code 1103). A
//! lookup by `external_task_id` is a poll of that task (it consumes a step).
//! Creates are counted by `external_task_id` (by `prompt` when absent);
//! repeated ids are accepted and counted, so a test sees a double submit.
//! See [`crate::fake_common`] for scripts and create control.

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::fake_common::{
    Admit, Core, Creates, Polled, core_accessors, create_control, detached, file_route,
    header_pairs, start_core, with_retry_after,
};
pub use crate::fake_common::{CreateRecord, CreateStep, Script, Step};
use crate::fake_openai::plumbing::{Server, json_response, unix_now};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The fake server. Dropping it shuts it down.
pub struct FakeKling {
    server: Server,
    core: Arc<Core>,
}

core_accessors!(FakeKling);
create_control!(FakeKling, core.creates);

impl FakeKling {
    /// # Panics
    /// If no loopback port can be bound; see [`FakeKling::try_start`].
    pub async fn start(access_key: &str, secret_key: &str) -> FakeKling {
        match FakeKling::try_start(access_key, secret_key).await {
            Ok(fake) => fake,
            Err(e) => panic!("start fake kling server: {e}"),
        }
    }

    pub async fn try_start(access_key: &str, secret_key: &str) -> io::Result<FakeKling> {
        let (server, core) = start_core(access_key, Some(secret_key), |core| {
            Router::new()
                .route("/v1/videos/text2video", post(create))
                .route("/v1/videos/text2video/{id}", get(query))
                .route("/files/{key}/{name}", get(file_route))
                .fallback(|| async { error(404, 1202, "Request method or path is not supported") })
                .with_state(core)
        })
        .await?;
        Ok(FakeKling { server, core })
    }
}

fn error(status: u16, code: i64, message: &str) -> Response {
    json_response(
        status,
        &json!({"code": code, "message": message, "request_id": "fake-request"}),
    )
}

/// Kling's error for an HTTP status, as its error-code table pairs them.
/// Kling never answers 402: a script's 402 stands for "out of credit" and
/// renders Kling's own way, 429 with code 1102 (resource pack used up).
fn http_error(status: u16) -> Response {
    if status == 402 {
        return error(
            429,
            1102,
            "Account balance is insufficient, the resource pack has been used up or has expired",
        );
    }
    let (code, message) = match status {
        400 => (1201, "Parameter error"),
        401 => (1000, "Authentication failed"),
        403 => (1103, "Unauthorized access to the requested resource"),
        404 => (1203, "The requested resource does not exist"),
        429 => (1302, "The API request is too fast, please slow down"),
        503 => (
            5001,
            "Server temporarily unavailable, usually due to maintenance",
        ),
        504 => (5002, "Server internal timeout, usually due to a backlog"),
        500..=599 => (5000, "Server internal error"),
        _ => (1200, "Invalid request parameters"),
    };
    error(status, code, message)
}

fn ok(data: Value) -> Response {
    json_response(
        200,
        &json!({"code": 0, "message": "SUCCEED", "request_id": "fake-request", "data": data}),
    )
}

/// Checks the JWT the way Kling documents it; the error answer otherwise.
fn jwt_refused(core: &Core, headers: &HeaderMap) -> Option<Response> {
    let refuse = |code, msg| Some(error(401, code, msg));
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return refuse(1001, "Authorization is empty");
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [head, claims, sig] = parts.as_slice() else {
        return refuse(1002, "Authorization is invalid");
    };
    let secret = core.secret.as_deref().unwrap_or_default();
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return refuse(1002, "Authorization is invalid");
    };
    mac.update(format!("{head}.{claims}").as_bytes());
    let sig_ok = URL_SAFE_NO_PAD
        .decode(sig)
        .is_ok_and(|s| mac.verify_slice(&s).is_ok());
    let decode = |part: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    let (Some(head), Some(claims)) = (decode(head), decode(claims)) else {
        return refuse(1002, "Authorization is invalid");
    };
    if !sig_ok || head["alg"] != "HS256" || claims["iss"] != core.api_key.as_str() {
        return refuse(1002, "Authorization is invalid");
    }
    let now = unix_now();
    if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now) {
        return refuse(1003, "Authorization is not yet valid");
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return refuse(1004, "Authorization has expired");
    }
    None
}

fn task_json(core: &Core, id: &str, status: &str) -> Value {
    json!({
        "task_id": id,
        "task_status": status,
        "task_status_msg": "",
        "task_info": {"external_task_id": core.tag_of(id)},
        "created_at": 1_722_769_557_708_i64,
        "updated_at": 1_722_769_557_708_i64,
    })
}

async fn query(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    core.count_request();
    if let Some(resp) = jwt_refused(&core, &headers) {
        return resp;
    }
    // The path takes a task id or our own external_task_id.
    let id = match core.script_of(&id) {
        Some(_) => id,
        None => match core.find_by_tag(&id) {
            Some(task_id) => task_id,
            None => return http_error(404),
        },
    };
    let step = match core.poll(&id).await {
        Polled::Render(step, _) => step,
        Polled::Error {
            status,
            retry_after,
        } => return with_retry_after(http_error(status), retry_after),
        Polled::Unknown => return http_error(404),
        Polled::Respond(resp) => return resp,
    };
    let status = match &step {
        Step::Queued => "submitted",
        Step::Running | Step::Hang(_) => "processing",
        Step::Succeeded | Step::OutputsGone => "succeed",
        Step::UnknownStatus(s) => s.as_str(),
        _ => "failed",
    };
    let mut task = task_json(&core, &id, status);
    match step {
        Step::Succeeded | Step::OutputsGone => {
            task["task_result"] = json!({"videos": [{
                "id": format!("video-{id}"),
                "url": core.file_url(&id, "video.mp4"),
                "duration": "5",
            }]});
        }
        Step::Failed(reason) | Step::Filtered(reason) => task["task_status_msg"] = json!(reason),
        Step::Canceled => task["task_status_msg"] = json!("Task was cancelled"),
        _ => {}
    }
    ok(task)
}

async fn create(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    detached(async move {
        core.count_request();
        if let Some(resp) = jwt_refused(&core, &headers) {
            return resp;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return error(400, 1200, "Invalid request parameters: body is not JSON");
        };
        let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
            return error(400, 1201, "Parameter error: prompt is required");
        };
        let external = body
            .get("external_task_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let (after, lost) = match core.creates.admit(&core.shutdown).await {
            Admit::Refuse {
                status,
                retry_after,
            } => return with_retry_after(http_error(status), retry_after),
            Admit::ShuttingDown => return http_error(503),
            Admit::Proceed { after, lost } => (after, lost),
        };
        let id = format!("8661{:014}", core.next_number());
        core.register_created(&id);
        if let Some(external) = external {
            core.tag(&id, external);
        }
        core.creates.record(CreateRecord {
            path: "/v1/videos/text2video".into(),
            headers: header_pairs(&headers),
            body: body.clone(),
            reference: external.unwrap_or(prompt).to_owned(),
            job_id: id.clone(),
        });
        let answer = ok(task_json(&core, &id, "submitted"));
        Creates::finish(after, lost, answer, &core.shutdown).await
    })
    .await
}
