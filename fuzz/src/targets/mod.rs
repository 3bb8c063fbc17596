//! The fuzz targets, one module each; each exports a `TARGET`.

pub mod cursor;
pub mod frame;
pub mod import;
pub mod index_key;
pub mod value_json;

/// Bytes as text, the way a WebSocket text frame or a JSON body arrives:
/// `None` when they are not UTF-8 (the transport refuses those first).
pub(crate) fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
