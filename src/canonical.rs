//! PLACEHOLDER until the canonical-path branch is merged (same API; no normalisation).
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
}
impl PathError {
    pub fn reason(self) -> &'static str {
        "not_absolute"
    }
}
pub struct CanonicalPath<'a> {
    pub decoded: Cow<'a, str>,
    pub wire: Cow<'a, str>,
    pub iis_trimmed: Option<String>,
}
impl CanonicalPath<'_> {
    pub fn changed(&self) -> bool {
        matches!(self.wire, Cow::Owned(_))
    }
}
pub fn canonicalize(raw: &str) -> Result<CanonicalPath<'_>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    Ok(CanonicalPath {
        decoded: Cow::Borrowed(raw),
        wire: Cow::Borrowed(raw),
        iis_trimmed: None,
    })
}
