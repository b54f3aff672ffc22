//! Calling a C function with arguments given on the command line.
//!
//! Owns: turning CLI words into SysV x86-64 arguments and the one call
//! through an untyped function pointer. Integer-class arguments go to the
//! six integer registers and floating-point ones to the eight SSE registers,
//! each class in order, whatever their interleaving, so one signature with
//! six integers and eight doubles covers every mix. Must never: pass more
//! arguments than fit in registers (that would need stack arguments).

use std::ffi::CString;

use anyhow::{Context, Result, bail};

/// One argument, already in its ABI class.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// Integer class: the 64-bit register value.
    Int(u64),
    /// SSE class: the 64-bit register value (an f32 sits in the low half).
    Float(u64),
    /// A string, passed as a pointer to its NUL-terminated bytes.
    Str(CString),
}

/// How to show the return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ret {
    I64,
    U64,
    I32,
    U32,
    F64,
    F32,
    Str,
    Ptr,
    Void,
}

pub const MAX_INT_ARGS: usize = 6;
pub const MAX_FLOAT_ARGS: usize = 8;

fn parse_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()?
    } else {
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        body.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn parse_float(s: &str) -> Option<f64> {
    // Only things that look like numbers: "inf" or "nan" are strings.
    let looks_numeric = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && s.bytes().any(|b| b.is_ascii_digit());
    if !looks_numeric {
        return None;
    }
    s.parse::<f64>().ok()
}

fn int_in_range(s: &str, lo: i128, hi: i128, what: &str) -> Result<i128> {
    let v = parse_int(s).with_context(|| format!("{s:?} is not an integer (for {what})"))?;
    if v < lo || v > hi {
        bail!("{s} is out of range for {what}");
    }
    Ok(v)
}

/// Parse one CLI word into an argument.
pub fn parse_arg(word: &str) -> Result<Arg> {
    if let Some((prefix, rest)) = word.split_once(':') {
        let arg = match prefix {
            "i64" => Some(Arg::Int(
                int_in_range(rest, i64::MIN.into(), i64::MAX.into(), "i64")? as i64 as u64,
            )),
            "u64" | "ptr" => Some(Arg::Int(
                int_in_range(rest, 0, u64::MAX.into(), prefix)? as u64
            )),
            "i32" => Some(Arg::Int(
                int_in_range(rest, i32::MIN.into(), i32::MAX.into(), "i32")? as i64 as u64,
            )),
            "u32" => Some(Arg::Int(
                int_in_range(rest, 0, u32::MAX.into(), "u32")? as u64
            )),
            "f64" => Some(Arg::Float(
                rest.parse::<f64>()
                    .with_context(|| format!("{rest:?} is not a number (for f64)"))?
                    .to_bits(),
            )),
            "f32" => Some(Arg::Float(u64::from(
                rest.parse::<f32>()
                    .with_context(|| format!("{rest:?} is not a number (for f32)"))?
                    .to_bits(),
            ))),
            "str" => Some(Arg::Str(
                CString::new(rest).context("a string argument cannot contain a NUL byte")?,
            )),
            _ => None,
        };
        if let Some(a) = arg {
            return Ok(a);
        }
    }
    if let Some(v) = parse_int(word) {
        if v < i128::from(i64::MIN) || v > i128::from(u64::MAX) {
            bail!("{word} does not fit in 64 bits");
        }
        return Ok(Arg::Int(v as u64));
    }
    if let Some(f) = parse_float(word) {
        return Ok(Arg::Float(f.to_bits()));
    }
    Ok(Arg::Str(
        CString::new(word).context("a string argument cannot contain a NUL byte")?,
    ))
}

/// The registers a call will use.
#[derive(Debug, Default)]
pub struct Registers {
    pub ints: [u64; MAX_INT_ARGS],
    pub floats: [u64; MAX_FLOAT_ARGS],
}

/// Assign arguments to registers; `strings` must outlive the call.
pub fn assign(args: &[Arg]) -> Result<Registers> {
    let mut regs = Registers::default();
    let (mut ni, mut nf) = (0usize, 0usize);
    for a in args {
        match a {
            Arg::Int(v) => {
                *regs.ints.get_mut(ni).with_context(|| {
                    format!("more than {MAX_INT_ARGS} integer or pointer arguments: the rest would go on the stack, which mmld run does not support")
                })? = *v;
                ni += 1;
            }
            Arg::Str(s) => {
                *regs.ints.get_mut(ni).with_context(|| {
                    format!("more than {MAX_INT_ARGS} integer or pointer arguments: the rest would go on the stack, which mmld run does not support")
                })? = s.as_ptr() as u64;
                ni += 1;
            }
            Arg::Float(v) => {
                *regs.floats.get_mut(nf).with_context(|| {
                    format!("more than {MAX_FLOAT_ARGS} floating-point arguments: the rest would go on the stack, which mmld run does not support")
                })? = *v;
                nf += 1;
            }
        }
    }
    Ok(regs)
}

type IntFn = unsafe extern "C" fn(
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
) -> u64;
type FloatFn = unsafe extern "C" fn(
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
) -> f64;

/// Call `addr` with `regs` and format its return value as `ret` asks.
///
/// # Safety
/// `addr` must be a function that takes at most the arguments in `regs`
/// (extra register values are ignored by a C callee) and returns `ret`.
pub unsafe fn call(addr: u64, regs: &Registers, ret: Ret) -> Result<Option<String>> {
    let i = regs.ints;
    let f = regs.floats.map(f64::from_bits);
    let out = match ret {
        Ret::F64 | Ret::F32 => {
            // SAFETY: per the caller's contract; the callee reads only the
            // registers its prototype names.
            let v = unsafe {
                let func: FloatFn = std::mem::transmute::<usize, FloatFn>(addr as usize);
                func(
                    i[0], i[1], i[2], i[3], i[4], i[5], f[0], f[1], f[2], f[3], f[4], f[5], f[6],
                    f[7],
                )
            };
            if ret == Ret::F32 {
                Some(f32::from_bits(v.to_bits() as u32).to_string())
            } else {
                Some(v.to_string())
            }
        }
        _ => {
            // SAFETY: as above.
            let v = unsafe {
                let func: IntFn = std::mem::transmute::<usize, IntFn>(addr as usize);
                func(
                    i[0], i[1], i[2], i[3], i[4], i[5], f[0], f[1], f[2], f[3], f[4], f[5], f[6],
                    f[7],
                )
            };
            match ret {
                Ret::I64 => Some((v as i64).to_string()),
                Ret::U64 => Some(v.to_string()),
                Ret::I32 => Some((v as u32 as i32).to_string()),
                Ret::U32 => Some((v as u32).to_string()),
                Ret::Ptr => Some(format!("{v:#x}")),
                Ret::Void => None,
                Ret::Str => {
                    if v == 0 {
                        Some("(null)".to_string())
                    } else {
                        Some(super::peek::c_string(v)?)
                    }
                }
                Ret::F64 | Ret::F32 => None,
            }
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_get_their_abi_class() {
        assert_eq!(parse_arg("2").unwrap(), Arg::Int(2));
        assert_eq!(parse_arg("-3").unwrap(), Arg::Int(-3i64 as u64));
        assert_eq!(parse_arg("0x10").unwrap(), Arg::Int(16));
        assert_eq!(parse_arg("1.5").unwrap(), Arg::Float(1.5f64.to_bits()));
        assert_eq!(parse_arg("2e3").unwrap(), Arg::Float(2000f64.to_bits()));
        assert_eq!(
            parse_arg("hello").unwrap(),
            Arg::Str(CString::new("hello").unwrap())
        );
        assert_eq!(
            parse_arg("str:12").unwrap(),
            Arg::Str(CString::new("12").unwrap())
        );
        assert_eq!(
            parse_arg("f32:1.5").unwrap(),
            Arg::Float(u64::from(1.5f32.to_bits()))
        );
        assert_eq!(parse_arg("i32:-1").unwrap(), Arg::Int(u64::MAX));
        assert_eq!(parse_arg("u32:4294967295").unwrap(), Arg::Int(0xffff_ffff));
        assert_eq!(parse_arg("ptr:0x1000").unwrap(), Arg::Int(0x1000));
        assert!(parse_arg("i32:99999999999").is_err());
        assert!(parse_arg("u64:-1").is_err());
        assert_eq!(
            parse_arg("inf").unwrap(),
            Arg::Str(CString::new("inf").unwrap())
        );
    }

    #[test]
    fn too_many_register_arguments_is_an_error() {
        let ints: Vec<Arg> = (0..7).map(Arg::Int).collect();
        assert!(assign(&ints).is_err());
        let floats: Vec<Arg> = (0..9).map(|v| Arg::Float(v as u64)).collect();
        assert!(assign(&floats).is_err());
        let mixed: Vec<Arg> = (0..6)
            .map(Arg::Int)
            .chain((0..8).map(|v| Arg::Float(v as u64)))
            .collect();
        let regs = assign(&mixed).unwrap();
        assert_eq!(regs.ints, [0, 1, 2, 3, 4, 5]);
    }
}
