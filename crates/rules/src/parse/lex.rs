//! The tokenizer: a restore line split into arguments as iptables'
//! `add_param_to_argv` splits it (blanks separate, `"..."` quotes).

use crate::error::{ErrorKind, PResult, Problem};

/// One argument, and whether it was quoted (a quoted `!` or `-x` is a value,
/// never an option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tok {
    pub text: String,
    pub quoted: bool,
}

/// Splits a line into arguments: blanks separate, `"..."` groups (a closing
/// quote ends the argument), `\x` inside quotes is `x`.
pub(crate) fn tokenize(line: &str) -> PResult<Vec<Tok>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote_open = false;
    let mut escaped = false;
    let mut quoted = false;
    let mut have = false;
    for c in line.chars() {
        if quote_open {
            if escaped {
                cur.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quote_open = false;
                out.push(Tok {
                    text: std::mem::take(&mut cur),
                    quoted,
                });
                quoted = false;
                have = false;
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                quote_open = true;
                quoted = true;
                have = true;
            }
            ' ' | '\t' | '\n' => {
                if have {
                    out.push(Tok {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                    quoted = false;
                    have = false;
                }
            }
            _ => {
                cur.push(c);
                have = true;
            }
        }
    }
    if quote_open {
        return Err(Problem::new(
            ErrorKind::Syntax,
            format!("\"{cur}"),
            "unterminated quote: close the argument with \"",
        ));
    }
    if have {
        out.push(Tok { text: cur, quoted });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer() {
        let t = tokenize(r#"-m comment --comment "a \"b\" \\c"  x"y z"w"#).unwrap();
        let v: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            v,
            vec!["-m", "comment", "--comment", r#"a "b" \c"#, "xy z", "w"]
        );
        assert!(t[3].quoted && !t[0].quoted);
        assert!(tokenize("\"open").is_err());
        assert_eq!(tokenize("\"\"").unwrap()[0].text, "");
    }
}
