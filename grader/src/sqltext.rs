//! A small SQL lexer, just enough to read SQL text without running it.
//!
//! It splits scripts into statements, finds a statement's first keyword and
//! its top-level `ORDER BY`, and skips everything that could fool a naive
//! search: string literals (`'..'`, `E'..'`), quoted identifiers, dollar
//! quotes, line and nested block comments, and parenthesised subqueries.

/// One lexical token of SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A keyword or unquoted identifier, folded to lower case.
    Word(String),
    /// A double-quoted identifier, unquoted.
    Quoted(String),
    /// A numeric literal.
    Number(String),
    /// A string or dollar-quoted literal (contents not kept).
    Literal,
    Open,
    Close,
    Comma,
    Semicolon,
    Dot,
    /// Any other operator character.
    Symbol(char),
}

/// A token with its byte range in the source and its parenthesis depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned {
    pub token: Token,
    pub start: usize,
    pub end: usize,
    pub depth: usize,
}

/// Splits SQL text into tokens, dropping whitespace and comments.
pub fn tokenize(sql: &str) -> Vec<Spanned> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(bytes, i);
                continue;
            }
            b'\'' => {
                i = skip_quoted(bytes, i + 1, b'\'', false);
                Token::Literal
            }
            b'e' | b'E' if bytes.get(i + 1) == Some(&b'\'') => {
                i = skip_quoted(bytes, i + 2, b'\'', true);
                Token::Literal
            }
            b'"' => {
                i = skip_quoted(bytes, i + 1, b'"', false);
                let inner = &sql[start + 1..i.saturating_sub(1).max(start + 1)];
                Token::Quoted(inner.replace("\"\"", "\""))
            }
            b'$' => match dollar_tag(sql, i) {
                Some(tag) => {
                    let body_start = i + tag.len();
                    i = match sql[body_start..].find(tag) {
                        Some(offset) => body_start + offset + tag.len(),
                        None => bytes.len(),
                    };
                    Token::Literal
                }
                None => {
                    i += 1;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    Token::Symbol('$')
                }
            },
            b'(' => {
                i += 1;
                depth += 1;
                tokens.push(Spanned {
                    token: Token::Open,
                    start,
                    end: i,
                    depth: depth - 1,
                });
                continue;
            }
            b')' => {
                i += 1;
                depth = depth.saturating_sub(1);
                Token::Close
            }
            b',' => {
                i += 1;
                Token::Comma
            }
            b';' => {
                i += 1;
                Token::Semicolon
            }
            b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                Token::Dot
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                Token::Number(sql[start..i].to_string())
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b'$'
                        || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                Token::Word(sql[start..i].to_lowercase())
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('?');
                i += ch.len_utf8();
                Token::Symbol(ch)
            }
        };
        tokens.push(Spanned {
            token,
            start,
            end: i,
            depth,
        });
    }
    tokens
}

/// Returns the index just past a (possibly nested) block comment.
fn skip_block_comment(bytes: &[u8], mut i: usize) -> usize {
    let mut nesting = 0usize;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            nesting += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            nesting -= 1;
            i += 2;
            if nesting == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Returns the index just past a quoted run that started before `i`.
/// A doubled quote is an escaped quote; with `backslash`, so is `\'`.
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8, backslash: bool) -> usize {
    while i < bytes.len() {
        if backslash && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Returns the dollar-quote tag (`$$` or `$name$`) starting at `i`, if any.
fn dollar_tag(sql: &str, i: usize) -> Option<&str> {
    let rest = &sql[i + 1..];
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    if rest.as_bytes()[end] != b'$' || rest[..end].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(&sql[i..i + end + 2])
}

/// One statement of a script: its text and byte offset in the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    pub text: &'a str,
    pub offset: usize,
}

/// Splits a script into its non-empty statements at top-level semicolons.
pub fn split_statements(sql: &str) -> Vec<Statement<'_>> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut has_content = false;
    for token in tokenize(sql) {
        if token.token == Token::Semicolon {
            if has_content {
                statements.push(Statement {
                    text: sql[start..token.start].trim(),
                    offset: start,
                });
            }
            start = token.end;
            has_content = false;
        } else {
            has_content = true;
        }
    }
    if has_content {
        statements.push(Statement {
            text: sql[start..].trim(),
            offset: start,
        });
    }
    statements
}

/// Returns the first keyword of a statement, skipping opening parentheses.
pub fn first_keyword(sql: &str) -> Option<String> {
    tokenize(sql).into_iter().find_map(|t| match t.token {
        Token::Open => None,
        Token::Word(word) => Some(word),
        _ => Some(String::new()),
    })
}

/// A term of a top-level ORDER BY clause, when it can be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderKey {
    /// `ORDER BY 2`: a 1-based output column position.
    Position(usize),
    /// `ORDER BY name` or `ORDER BY t.name`: an output column name.
    Name(String),
}

/// The top-level ORDER BY of a query, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// The sort keys, or `None` when some term is an expression this lexer
    /// cannot map to an output column.
    pub keys: Option<Vec<OrderKey>>,
}

/// Finds the top-level ORDER BY of a query, ignoring ORDER BY inside
/// parentheses (subqueries, window and aggregate clauses), strings and
/// comments.
pub fn top_level_order_by(sql: &str) -> Option<OrderBy> {
    let tokens = tokenize(sql);
    let at = tokens.windows(2).position(|pair| {
        pair[0].depth == 0
            && pair[1].depth == 0
            && pair[0].token == Token::Word("order".into())
            && pair[1].token == Token::Word("by".into())
    })?;
    let mut keys = Some(Vec::new());
    let mut term: Vec<&Token> = Vec::new();
    let clause_end = |t: &Spanned| {
        t.depth == 0
            && match &t.token {
                Token::Semicolon => true,
                Token::Word(w) => matches!(w.as_str(), "limit" | "offset" | "fetch" | "for"),
                _ => false,
            }
    };
    for token in tokens[at + 2..].iter() {
        if clause_end(token) {
            break;
        }
        if token.depth == 0 && token.token == Token::Comma {
            push_order_key(&mut keys, &term);
            term.clear();
        } else {
            term.push(&token.token);
        }
    }
    push_order_key(&mut keys, &term);
    Some(OrderBy { keys })
}

/// Resolves one ORDER BY term into `keys`, or clears `keys` if it cannot.
fn push_order_key(keys: &mut Option<Vec<OrderKey>>, term: &[&Token]) {
    let Some(list) = keys.as_mut() else { return };
    let mut term = term.to_vec();
    if let Some(using) = term.iter().position(|t| **t == Token::Word("using".into())) {
        term.truncate(using);
    }
    while let Some(Token::Word(w)) = term.last() {
        if matches!(w.as_str(), "asc" | "desc" | "nulls" | "first" | "last") {
            term.pop();
        } else {
            break;
        }
    }
    let key = match term.as_slice() {
        [Token::Number(n)] => n.parse().ok().map(OrderKey::Position),
        [.., Token::Word(name)] | [.., Token::Quoted(name)]
            if term.iter().enumerate().all(|(i, t)| match t {
                Token::Dot => i % 2 == 1,
                Token::Word(_) | Token::Quoted(_) => i % 2 == 0,
                _ => false,
            }) =>
        {
            Some(OrderKey::Name(name.clone()))
        }
        _ => None,
    };
    match key {
        Some(key) => list.push(key),
        None => *keys = None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_strings_comments_and_dollar_quotes() {
        let script = "create table t(a text); -- a; comment\n\
                      insert into t values ('x;y'), (E'it\\'s;'); /* ; /* nested ; */ */\n\
                      create function f() returns int as $body$ select 1; $body$ language sql;;";
        let statements: Vec<&str> = split_statements(script).iter().map(|s| s.text).collect();
        assert_eq!(statements.len(), 3, "{statements:?}");
        assert!(statements[1].starts_with("-- a; comment"));
        assert!(statements[2].contains("$body$ select 1; $body$"));
    }

    #[test]
    fn finds_the_first_keyword() {
        assert_eq!(first_keyword("  (( SELECT 1))").as_deref(), Some("select"));
        assert_eq!(
            first_keyword("/* x */ -- y\nWITH a AS (select 1) select 1").as_deref(),
            Some("with")
        );
        assert_eq!(first_keyword("'x'").as_deref(), Some(""));
        assert_eq!(first_keyword("   "), None);
    }

    #[test]
    fn detects_only_top_level_order_by() {
        assert!(top_level_order_by("select a from t order by a").is_some());
        assert!(top_level_order_by("select a from (select a from t order by a) q").is_none());
        assert!(top_level_order_by("select row_number() over (order by a) from t").is_none());
        assert!(top_level_order_by("select string_agg(a, ',' order by a) from t").is_none());
        assert!(top_level_order_by("select 'order by a' from t -- order by a").is_none());
        assert!(top_level_order_by("select a /* order by */ from t").is_none());
        assert!(top_level_order_by("select \"order\" by_ from t").is_none());
        assert!(top_level_order_by("select a from t union select a from u ORDER BY 1").is_some());
    }

    #[test]
    fn resolves_order_keys() {
        let keys = |sql: &str| top_level_order_by(sql).unwrap().keys;
        assert_eq!(
            keys("select a, b from t order by t.a desc nulls last, 2 limit 3"),
            Some(vec![OrderKey::Name("a".into()), OrderKey::Position(2)])
        );
        assert_eq!(
            keys("select a from t order by \"A\""),
            Some(vec![OrderKey::Name("A".into())])
        );
        assert_eq!(keys("select a from t order by a + 1"), None);
        assert_eq!(keys("select a from t order by lower(a)"), None);
    }
}
