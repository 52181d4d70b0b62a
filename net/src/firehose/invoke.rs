//! Lambda's Invoke API as Firehose calls it for a transformation:
//! `POST {base}/2015-03-31/functions/{name}/invocations[?Qualifier=q]`, synchronous
//! (`X-Amz-Invocation-Type: RequestResponse`), signed with SigV4 (`lambda`) when keys are
//! set. `{base}` is `MILLRACE_LAMBDA_ENDPOINT`: AWS's Lambda runtime interface emulator,
//! `sam local start-lambda`, LocalStack or real Lambda serve this API.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::config::LambdaPlan;
use super::http::{CallError, Target};
use crate::aws::sigv4::{self, Payload, SignedRequest};

/// An invocation may run this long (Firehose's limit is 5 minutes), plus the transfer.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(330);
/// Lambda's synchronous payload limit.
pub const PAYLOAD_MAX: usize = 6 << 20;

#[derive(Debug, Clone)]
pub struct LambdaEndpoint {
    pub target: Target,
    pub credentials: Option<(String, String)>,
}

impl LambdaEndpoint {
    /// From `MILLRACE_LAMBDA_ENDPOINT` (none: Lambda processors are refused at create), with
    /// keys from `MILLRACE_LAMBDA_ACCESS_KEY_ID`/`MILLRACE_LAMBDA_SECRET_ACCESS_KEY` or the
    /// standard AWS variables.
    pub fn from_env() -> Result<Option<LambdaEndpoint>, String> {
        let Some(url) = std::env::var("MILLRACE_LAMBDA_ENDPOINT").ok().filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        let target = Target::parse(url.trim_end_matches('/'))
            .map_err(|error| format!("MILLRACE_LAMBDA_ENDPOINT: {error}"))?;
        let var = |names: [&str; 2]| {
            names.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        };
        let credentials = match (
            var(["MILLRACE_LAMBDA_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]),
            var(["MILLRACE_LAMBDA_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"]),
        ) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        Ok(Some(LambdaEndpoint { target, credentials }))
    }

    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.target.tls { "https" } else { "http" },
            self.target.host_header,
            self.base_path()
        )
    }

    fn base_path(&self) -> &str {
        let path = self.target.path_and_query.split('?').next().unwrap_or("");
        path.trim_end_matches('/')
    }
}

/// What an invocation came back with.
pub enum Invoked {
    /// The function ran and answered this payload.
    Answer(Vec<u8>),
    /// It ran and failed (`X-Amz-Function-Error`), or could not be invoked: retried.
    Failed { code: String, message: String },
}

pub async fn invoke(endpoint: &LambdaEndpoint, plan: &LambdaPlan, payload: bytes::Bytes) -> Invoked {
    let raw_path = format!("{}/2015-03-31/functions/{}/invocations", endpoint.base_path(), plan.function);
    let query =
        plan.qualifier.as_ref().map(|qualifier| format!("Qualifier={}", sigv4::uri_encode(qualifier, true)));
    let mut headers = vec![
        ("content-length".to_owned(), payload.len().to_string()),
        ("content-type".to_owned(), "application/json".to_owned()),
        ("host".to_owned(), endpoint.target.host_header.clone()),
        ("x-amz-invocation-type".to_owned(), "RequestResponse".to_owned()),
    ];
    if let Some((id, secret)) = &endpoint.credentials {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        let amz_date = sigv4::format_amz_date(now);
        headers.push(("x-amz-content-sha256".to_owned(), sigv4::hex(&Sha256::digest(&payload))));
        headers.push(("x-amz-date".to_owned(), amz_date.clone()));
        let signed = SignedRequest {
            method: "POST",
            path: &raw_path,
            query: query.as_deref().unwrap_or(""),
            headers: &headers,
            payload: Payload::Body(&payload),
        };
        let authorization = sigv4::sign(&signed, id, secret, &plan.region, "lambda", &amz_date);
        headers.push(("authorization".to_owned(), authorization));
    }
    let mut path = sigv4::uri_encode(&raw_path, false);
    if let Some(query) = &query {
        path = format!("{path}?{query}");
    }
    let answer = endpoint.target.call("POST", &path, &headers, payload, INVOKE_TIMEOUT, PAYLOAD_MAX).await;
    match answer {
        Ok(answer) if answer.status == 200 && answer.header("x-amz-function-error").is_none() => {
            Invoked::Answer(answer.body)
        }
        Ok(answer) if answer.status == 200 => {
            let detail = String::from_utf8_lossy(&answer.body[..answer.body.len().min(400)]).into_owned();
            Invoked::Failed {
                code: "Lambda.FunctionError".to_owned(),
                message: format!("{} {detail}", super::lambda::FUNCTION_ERROR),
            }
        }
        Ok(answer) => {
            // The codes Firehose's error records use for invoke failures.
            let code = match answer.status {
                403 => "Lambda.InvokeAccessDenied",
                404 => "Lambda.ResourceNotFound",
                429 => "Lambda.InvokeLimitExceeded",
                _ => "Lambda.InvokeFailed",
            };
            let detail = String::from_utf8_lossy(&answer.body[..answer.body.len().min(400)]).into_owned();
            Invoked::Failed {
                code: code.to_owned(),
                message: format!("The Lambda Invoke API answered {}: {detail}", answer.status),
            }
        }
        Err(CallError::Timeout(_)) => Invoked::Failed {
            code: "Lambda.FunctionTimedOut".to_owned(),
            message: super::lambda::FUNCTION_TIMED_OUT.to_owned(),
        },
        Err(error) => Invoked::Failed {
            code: "Lambda.InvokeFailed".to_owned(),
            message: format!("Invoking {} failed: {error}", plan.arn),
        },
    }
}
