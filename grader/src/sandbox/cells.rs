//! Typed cells: PostgreSQL values read from the binary format into JSON.
//!
//! Numbers become JSON numbers (numeric through its decimal text, so it
//! keeps its value up to f64 precision), booleans stay booleans, text stays
//! text, NULL is `null`, JSON stays JSON; dates, times, uuids and bytea are
//! text. Every other type is read as text through a `::text` cast that the
//! query wrapper adds ([`needs_text_cast`]).

use std::error::Error;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::{Number, Value};
use tokio_postgres::types::{FromSql, Kind, Type};

/// The raw binary bytes of a cell, whatever its type.
pub struct RawCell<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(RawCell(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Returns true when values of `ty` must be cast to text to be read.
pub fn needs_text_cast(ty: &Type) -> bool {
    !(is_text(ty)
        || matches!(
            *ty,
            Type::BOOL
                | Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::OID
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::NUMERIC
                | Type::CHAR
                | Type::JSON
                | Type::JSONB
                | Type::DATE
                | Type::TIME
                | Type::TIMESTAMP
                | Type::TIMESTAMPTZ
                | Type::UUID
                | Type::BYTEA
        ))
}

/// Returns true for types whose binary format is their UTF-8 text.
fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

/// A float as JSON: a number when finite, else its PostgreSQL spelling.
fn float(value: f64) -> Value {
    match Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::String("NaN".into()),
        None if value > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// Decodes one non-NULL cell of type `ty` (a type for which
/// [`needs_text_cast`] is false, or text after a cast).
///
/// # Errors
///
/// Fails when the bytes are not a valid value of the type.
pub fn decode(ty: &Type, raw: &[u8]) -> Result<Value, Box<dyn Error + Sync + Send>> {
    Ok(match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
        Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
        Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
        Type::OID => Value::from(u32::from_sql(ty, raw)?),
        Type::FLOAT4 => float(f32::from_sql(ty, raw)?.to_string().parse::<f64>()?),
        Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => {
            let text = numeric_text(raw)?;
            match text.parse::<f64>() {
                Ok(value) if value.is_finite() => float(value),
                _ => Value::String(text),
            }
        }
        Type::CHAR => Value::String(char::from(i8::from_sql(ty, raw)? as u8).to_string()),
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::DATE => Value::String(NaiveDate::from_sql(ty, raw)?.format("%Y-%m-%d").to_string()),
        Type::TIME => Value::String(
            NaiveTime::from_sql(ty, raw)?
                .format("%H:%M:%S%.f")
                .to_string(),
        ),
        Type::TIMESTAMP => Value::String(
            NaiveDateTime::from_sql(ty, raw)?
                .format("%Y-%m-%d %H:%M:%S%.f")
                .to_string(),
        ),
        Type::TIMESTAMPTZ => Value::String(
            DateTime::<Utc>::from_sql(ty, raw)?
                .format("%Y-%m-%d %H:%M:%S%.f+00")
                .to_string(),
        ),
        Type::UUID => Value::String(uuid::Uuid::from_sql(ty, raw)?.to_string()),
        Type::BYTEA => Value::String(format!("\\x{}", hex::encode(raw))),
        _ => Value::String(std::str::from_utf8(raw)?.to_string()),
    })
}

/// Returns how many bytes the decoded value of a cell takes as text,
/// without decoding it: a numeric's printed digits follow from its header
/// (a 10-byte `9e131071` prints as 131,072 digits), bytea doubles as hex,
/// everything else is about as long as it was on the wire.
pub fn decoded_len(ty: &Type, raw: &[u8]) -> usize {
    match *ty {
        Type::NUMERIC => numeric_text_len(raw),
        Type::BYTEA => raw.len().saturating_mul(2).saturating_add(2),
        _ => raw.len(),
    }
}

/// The length of [`numeric_text`]'s rendering of `raw`, from its header.
fn numeric_text_len(raw: &[u8]) -> usize {
    let word = |i: usize| {
        raw.get(i * 2..i * 2 + 2)
            .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]))
    };
    let (weight, scale) = (i64::from(word(1)), usize::from(word(3) as u16));
    let integer_digits = usize::try_from((weight + 1) * 4).unwrap_or(0).max(1);
    1 + integer_digits + if scale > 0 { 1 + scale } else { 0 }
}

/// Renders a binary `numeric` as decimal text (`NaN` and infinities too).
///
/// # Errors
///
/// Fails on a truncated value.
pub fn numeric_text(raw: &[u8]) -> Result<String, Box<dyn Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric value".into())
    };
    let (count, weight, sign, scale) = (
        word(0)? as usize,
        word(1)? as i64,
        word(2)? as u16,
        word(3)? as u16,
    );
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..count).map(|i| word(4 + i)).collect::<Result<_, _>>()?;
    let group = |exponent: i64| -> i16 {
        let index = weight - exponent;
        if index >= 0 && (index as usize) < digits.len() {
            digits[index as usize]
        } else {
            0
        }
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&group(weight).to_string());
        for exponent in (0..weight).rev() {
            text.push_str(&format!("{:04}", group(exponent)));
        }
    }
    if scale > 0 {
        let mut fraction = String::new();
        let mut exponent = -1;
        while fraction.len() < scale as usize {
            fraction.push_str(&format!("{:04}", group(exponent)));
            exponent -= 1;
        }
        fraction.truncate(scale as usize);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(count: i16, weight: i16, sign: u16, scale: u16, digits: &[i16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for word in [count, weight, sign as i16, scale as i16]
            .iter()
            .chain(digits)
        {
            raw.extend_from_slice(&word.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_render_as_decimal_text() {
        assert_eq!(
            numeric_text(&numeric(2, 1, 0, 0, &[12, 3456])).unwrap(),
            "123456"
        );
        assert_eq!(
            numeric_text(&numeric(2, 0, 0x4000, 2, &[3, 1400])).unwrap(),
            "-3.14"
        );
        assert_eq!(
            numeric_text(&numeric(1, -1, 0, 5, &[50])).unwrap(),
            "0.00500"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(
            numeric_text(&numeric(1, 2, 0, 0, &[7])).unwrap(),
            "700000000"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_text(&[0, 1]).is_err());
    }

    #[test]
    fn numeric_lengths_are_known_before_rendering() {
        for raw in [
            numeric(2, 1, 0, 0, &[12, 3456]),
            numeric(2, 0, 0x4000, 2, &[3, 1400]),
            numeric(1, -1, 0, 5, &[50]),
            numeric(1, 2, 0, 0, &[7]),
        ] {
            let text = numeric_text(&raw).unwrap();
            assert!(decoded_len(&Type::NUMERIC, &raw) >= text.len(), "{text}");
        }
        // 9e131071: ten bytes on the wire, 131,072 characters printed.
        let bomb = numeric(1, 32767, 0, 0, &[9]);
        assert!(bomb.len() <= 10);
        assert!(decoded_len(&Type::NUMERIC, &bomb) >= 131_072);
        assert_eq!(decoded_len(&Type::BYTEA, &[1, 2, 3]), 8);
    }

    #[test]
    fn unusual_types_need_a_text_cast() {
        assert!(!needs_text_cast(&Type::INT4));
        assert!(!needs_text_cast(&Type::NUMERIC));
        assert!(needs_text_cast(&Type::INTERVAL));
        assert!(needs_text_cast(&Type::INT4_ARRAY));
        assert!(needs_text_cast(&Type::INET));
    }
}
