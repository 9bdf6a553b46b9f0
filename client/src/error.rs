//! The client's error: a gRPC code and what went wrong.

use std::fmt;

/// Why a call (or one item of a batch) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: tonic::Code,
    message: String,
}

impl Error {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// The gRPC status code (UNAVAILABLE: the owner could not be reached;
    /// DEADLINE_EXCEEDED; INVALID_ARGUMENT: a bad key; ...).
    pub fn code(&self) -> tonic::Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error of a call to the node at `addr`. A failure of the
    /// connection itself (tonic reports it as UNKNOWN or UNAVAILABLE with
    /// the transport error as its source; a status the server sent has
    /// none) is UNAVAILABLE naming the node, and is retried like one.
    pub(crate) fn from_call(s: tonic::Status, addr: std::net::SocketAddr) -> Error {
        use std::error::Error as _;
        match s.source() {
            Some(cause) => Error::new(
                tonic::Code::Unavailable,
                format!("node {addr} could not be reached: {}: {cause}", s.message()),
            ),
            _ => Error::from(s),
        }
    }

    /// An item's status in a batch response (`code` 0 is not an error).
    pub(crate) fn from_item(code: i32, message: &str) -> Option<Error> {
        (code != 0).then(|| Error::new(tonic::Code::from_i32(code), message))
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::new(s.code(), s.message())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
