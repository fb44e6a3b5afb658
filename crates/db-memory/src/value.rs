//! Value rules are shared: see `truststream_core_db::value`.

pub(crate) use truststream_core_db::value::{describe, normalize, now};
