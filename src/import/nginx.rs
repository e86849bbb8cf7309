//! placeholder
use super::{ParseError, Translation};
pub(super) fn translate(_text: &str, _file: &str) -> Result<Translation, ParseError> {
    todo!()
}
