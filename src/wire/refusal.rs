//! Refusals as data. The daemon answers every request it refuses with an
//! HTTP status and `{"error": {"field", "message", "status"}}`; a client
//! reads that back as the same [`Refusal`]: its kind, the field at fault and
//! the message, never parsed out of text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request was refused; each kind is one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// 400: not the JSON the route takes (malformed, a wrong type).
    Malformed,
    /// 401: no bearer token, or one the daemon does not know.
    Unauthenticated,
    /// 403: the caller lacks the role the action needs.
    Forbidden,
    /// 404: no such rollout, incident or endpoint.
    NotFound,
    /// 408: the request's body did not arrive in time.
    TimedOut,
    /// 409: the action does not apply in the current state.
    Conflict,
    /// 413: the body or the batch is too large.
    TooLarge,
    /// 415: the body is not sent as `application/json`.
    UnsupportedMediaType,
    /// 422: well-formed, but the contract refuses it (a field is wrong or
    /// missing, a rule is broken).
    Invalid,
    /// 429: the caller's token has used its writes for now; retry.
    TooManyRequests,
    /// 500: the daemon failed (its log has the cause).
    Internal,
    /// 503: not now (restoring state, a driver stopping); retry.
    Unavailable,
}

impl RefusalKind {
    pub fn status(self) -> u16 {
        match self {
            RefusalKind::Malformed => 400,
            RefusalKind::Unauthenticated => 401,
            RefusalKind::Forbidden => 403,
            RefusalKind::NotFound => 404,
            RefusalKind::TimedOut => 408,
            RefusalKind::Conflict => 409,
            RefusalKind::TooLarge => 413,
            RefusalKind::UnsupportedMediaType => 415,
            RefusalKind::Invalid => 422,
            RefusalKind::TooManyRequests => 429,
            RefusalKind::Internal => 500,
            RefusalKind::Unavailable => 503,
        }
    }

    /// The kind an HTTP status stands for; `None` for one the daemon never
    /// answers with.
    pub fn from_status(status: u16) -> Option<RefusalKind> {
        Some(match status {
            400 => RefusalKind::Malformed,
            401 => RefusalKind::Unauthenticated,
            403 => RefusalKind::Forbidden,
            404 => RefusalKind::NotFound,
            408 => RefusalKind::TimedOut,
            409 => RefusalKind::Conflict,
            413 => RefusalKind::TooLarge,
            415 => RefusalKind::UnsupportedMediaType,
            422 => RefusalKind::Invalid,
            429 => RefusalKind::TooManyRequests,
            500 => RefusalKind::Internal,
            503 => RefusalKind::Unavailable,
            _ => return None,
        })
    }
}

/// A refused request: what kind of refusal, the field at fault (a body's
/// field or path, `events[3].latency_ms`; `None` when the whole request is
/// at fault) and the message. Serializes as the error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ErrorBody", try_from = "ErrorBody")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub field: Option<String>,
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind`; an empty `field` names none.
    pub fn new(kind: RefusalKind, field: impl Into<String>, message: impl Into<String>) -> Refusal {
        let field = field.into();
        Refusal {
            kind,
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        }
    }

    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Malformed, field, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Unauthenticated, "", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Forbidden, "", message)
    }

    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::NotFound, "", message)
    }

    pub fn conflict(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Conflict, "", message)
    }

    pub fn too_large(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::TooLarge, "", message)
    }

    pub fn timed_out(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::TimedOut, "", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::UnsupportedMediaType, "", message)
    }

    pub fn too_many_requests(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::TooManyRequests, "", message)
    }

    /// The contract refuses `field` (empty: no one field).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Invalid, field, message)
    }

    pub fn internal(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Internal, "", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Unavailable, "", message)
    }

    /// The same refusal, naming `field`.
    pub fn at(mut self, field: impl Into<String>) -> Refusal {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

/// `field: message`, or the message alone.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Refusal {}

/// The error body as it is written: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub field: Option<String>,
    pub message: String,
    pub status: u16,
}

impl From<Refusal> for ErrorBody {
    fn from(r: Refusal) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                status: r.status(),
                field: r.field,
                message: r.message,
            },
        }
    }
}

impl TryFrom<ErrorBody> for Refusal {
    type Error = String;

    fn try_from(body: ErrorBody) -> Result<Refusal, String> {
        let e = body.error;
        let kind = RefusalKind::from_status(e.status)
            .ok_or_else(|| format!("status {} is not one the daemon refuses with", e.status))?;
        Ok(Refusal {
            kind,
            field: e.field,
            message: e.message,
        })
    }
}
