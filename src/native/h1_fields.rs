//! Field lines for the HTTP/1.1 differential tests (our client against
//! hyper's, our server fast path against hyper's): the field-syntax tricks
//! both sides must refuse alike, and how a test draws a field.

use proptest::prelude::*;

/// Folded, control-byte, bare CR and LF, bad-name and colon-less lines.
const SYNTAX_TRICKS: &[&str] = &[
    "X-Fold: a\r\n b",
    "X-Fold: a\r\n\tb",
    "X-Nul: a\0b",
    "X-Del: a\u{7f}b",
    "X-Cr: a\rb",
    "X-Lf: a\nb",
    "Bad Name: x",
    "Bad\u{1}Name: x",
    ": no name",
    "no colon",
];

/// A field line: a well-behaved one three times in four, else one of the
/// test's own `tricks` or of the syntax tricks above.
pub(super) fn field(
    well: &'static [&'static str],
    tricks: &'static [&'static str],
) -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => prop::sample::select(well),
        1 => prop::sample::select(tricks),
        1 => prop::sample::select(SYNTAX_TRICKS),
    ]
}
