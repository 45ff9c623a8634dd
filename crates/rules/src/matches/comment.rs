//! `-m comment` (`xt_comment.c`): a note of up to 255 bytes; it tests
//! nothing and compiles to nothing.

use std::fmt::Write;

use crate::error::PResult;
use crate::parse::{Opt, OptSpec};
use crate::print::save_string;

pub(super) const OPTIONS: &[OptSpec] = &[OptSpec::value("comment", 0)];

/// The comment, cut to 255 bytes (on a character boundary) as the kernel
/// stores it.
pub(super) fn parse_option(c: &mut Option<String>, opt: &Opt<'_>) -> PResult<()> {
    let mut s = opt.arg().to_string();
    if s.len() > 255 {
        let mut n = 255;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
    *c = Some(s);
    Ok(())
}

pub(super) fn save(s: &mut String, c: &str) {
    s.push_str(" -m comment --comment");
    save_string(s, c);
}

pub(super) fn list(out: &mut String, c: &str) {
    let _ = write!(out, " /* {c} */");
}
