//! AMQP reply codes and how core errors map to them.

use weir_core::queues::QueueError;

/// 312: a mandatory message had no route.
pub const NO_ROUTE: u16 = 312;
/// 320: the broker is closing the connection.
pub const CONNECTION_FORCED: u16 = 320;
/// 403.
pub const ACCESS_REFUSED: u16 = 403;
/// 404.
pub const NOT_FOUND: u16 = 404;
/// 405.
pub const RESOURCE_LOCKED: u16 = 405;
/// 406.
pub const PRECONDITION_FAILED: u16 = 406;
/// 501: a malformed frame.
pub const FRAME_ERROR: u16 = 501;
/// 502: a frame whose fields do not parse.
pub const SYNTAX_ERROR: u16 = 502;
/// 503: a method not allowed now.
pub const COMMAND_INVALID: u16 = 503;
/// 504: a channel that is not open (or opened twice).
pub const CHANNEL_ERROR: u16 = 504;
/// 505: a frame of the wrong type at this point.
pub const UNEXPECTED_FRAME: u16 = 505;
/// 530.
pub const NOT_ALLOWED: u16 = 530;
/// 540.
pub const NOT_IMPLEMENTED: u16 = 540;
/// 541.
pub const INTERNAL_ERROR: u16 = 541;

/// An error that closes a channel or the whole connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// Reply code.
    pub code: u16,
    /// Reply text, RabbitMQ-style (`NOT_FOUND - no queue 'q' in vhost '/'`).
    pub text: String,
    /// True for connection exceptions.
    pub connection: bool,
    /// Class of the method that failed (0 when not a method).
    pub class_id: u16,
    /// The method's id within its class.
    pub method_id: u16,
}

impl AmqpError {
    /// A channel exception.
    pub fn channel(code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError {
            code,
            text: text.into(),
            connection: false,
            class_id: 0,
            method_id: 0,
        }
    }

    /// A connection exception; `text` gets the code's name as prefix.
    pub fn connection(code: u16, text: impl AsRef<str>) -> AmqpError {
        AmqpError {
            code,
            text: format!("{} - {}", code_name(code), text.as_ref()),
            connection: true,
            class_id: 0,
            method_id: 0,
        }
    }

    /// The error, naming the method that caused it (unless it names one).
    pub fn during(mut self, (class_id, method_id): (u16, u16)) -> AmqpError {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }
}

/// RabbitMQ's name of a reply code.
pub fn code_name(code: u16) -> &'static str {
    match code {
        ACCESS_REFUSED => "ACCESS_REFUSED",
        NOT_FOUND => "NOT_FOUND",
        RESOURCE_LOCKED => "RESOURCE_LOCKED",
        PRECONDITION_FAILED => "PRECONDITION_FAILED",
        FRAME_ERROR => "FRAME_ERROR",
        SYNTAX_ERROR => "SYNTAX_ERROR",
        COMMAND_INVALID => "COMMAND_INVALID",
        CHANNEL_ERROR => "CHANNEL_ERROR",
        UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        NOT_ALLOWED => "NOT_ALLOWED",
        NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        CONNECTION_FORCED => "CONNECTION_FORCED",
        _ => "INTERNAL_ERROR",
    }
}

impl From<QueueError> for AmqpError {
    fn from(error: QueueError) -> AmqpError {
        let text = error.to_string();
        let (code, connection) = match error {
            QueueError::NotFound(_) => (NOT_FOUND, false),
            QueueError::ResourceLocked(_) => (RESOURCE_LOCKED, false),
            QueueError::PreconditionFailed(_) => (PRECONDITION_FAILED, false),
            QueueError::AccessRefused(_) => (ACCESS_REFUSED, false),
            QueueError::NotAllowed(_) => (NOT_ALLOWED, true),
            QueueError::NotImplemented(_) => (NOT_IMPLEMENTED, true),
            _ => (INTERNAL_ERROR, true),
        };
        AmqpError {
            code,
            text,
            connection,
            class_id: 0,
            method_id: 0,
        }
    }
}

/// Shorthand for handler results.
pub type AmqpResult<T = ()> = Result<T, AmqpError>;
