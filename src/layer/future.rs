//! The futures the layer's services return.

pub use super::connection::ConnectionFuture;
pub use super::make_service::MakeFuture;
pub use super::request::ResponseFuture;
