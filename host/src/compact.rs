//! Compacting the data segments of a snapshotted component.
//!
//! A snapshot lists the memory it captured as one active data segment per
//! run of non-zero bytes (thousands for a JavaScript engine's heap) and turns
//! the component's own segments into empty passive ones. wasmtime builds the
//! copy-on-write image from the segments once, at compile time, but walks
//! every segment again each time it creates an instance: with 20,000 of them
//! that walk was a tenth of a JavaScript call. This rewrite leaves one active
//! segment per stretch of memory, filling gaps of up to [`MAX_GAP`] zero bytes
//! (which is what memory holds there anyway), and drops the empty passive
//! segments.
//!
//! A core module is rewritten only when that changes nothing it can observe:
//! no instruction names a segment (`memory.init`, `data.drop`), every active
//! segment sits at a constant offset, and no two overlap. Anything else, and
//! anything this code does not parse, is copied as it was.
//!
//! The zeros filled in are bytes the host holds, and the component is the
//! uploader's: a module the snapshot left alone (one never instantiated) can
//! space a hundred thousand one-byte segments 64 KiB apart, gigabytes once
//! merged. So the merged segments of the whole component share a budget
//! (the memory a snapshot's own segments can span); a module that would go
//! past it is copied as it was.

use wasm_encoder::{ConstExpr, DataSection};
use wasmparser::{DataKind, Operator, Parser, Payload};

/// The longest run of zero bytes merged into a segment rather than ending it.
const MAX_GAP: u64 = 64 << 10;

const COMPONENT_CORE_MODULE: u8 = 1;
const COMPONENT_COMPONENT: u8 = 4;
const MODULE_DATA: u8 = 11;
const MODULE_DATA_COUNT: u8 = 12;

/// `component` with the data segments of its core modules compacted, their
/// merged segments at most `budget` bytes in all, or `None` if it is not a
/// component this code can read.
pub(crate) fn compact_component(component: &[u8], budget: u64) -> Option<Vec<u8>> {
    let mut left = budget;
    compact_within(component, &mut left)
}

fn compact_within(component: &[u8], left: &mut u64) -> Option<Vec<u8>> {
    rewrite_sections(component, &mut |id, body| match id {
        COMPONENT_CORE_MODULE => Some(compact_module(body, left).unwrap_or_else(|| body.to_vec())),
        COMPONENT_COMPONENT => compact_within(body, left),
        _ => Some(body.to_vec()),
    })
}

/// A core module with its data segments compacted, taking their bytes from
/// `left`, or `None` when it must stay as it is.
fn compact_module(module: &[u8], left: &mut u64) -> Option<Vec<u8>> {
    let segments = mergeable_segments(module, left)?;
    let mut data = DataSection::new();
    for segment in &segments {
        let offset = if segment.memory64 {
            ConstExpr::i64_const(segment.offset as i64)
        } else {
            ConstExpr::i32_const(segment.offset as u32 as i32)
        };
        data.active(segment.memory, &offset, segment.bytes.iter().copied());
    }
    let mut data_section = Vec::new();
    wasm_encoder::Encode::encode(&data, &mut data_section);
    // The section as encoded starts with its size; the body follows it.
    let (_, size_len) = read_leb(&data_section, 0)?;
    let data_body = data_section[size_len..].to_vec();
    let mut data_body = Some(data_body);
    rewrite_sections(module, &mut |id, body| match id {
        MODULE_DATA => Some(data_body.take().unwrap_or_default()),
        // Only present to let instructions name segments, which none do here.
        MODULE_DATA_COUNT => {
            let mut count = Vec::new();
            wasm_encoder::Encode::encode(&(segments.len() as u32), &mut count);
            Some(count)
        }
        _ => Some(body.to_vec()),
    })
}

struct Segment {
    memory: u32,
    memory64: bool,
    offset: u64,
    bytes: Vec<u8>,
}

/// The module's active segments merged across small gaps, sorted by memory
/// and offset, if compacting is safe (see the module comment) and their
/// bytes fit in what is `left` (taken from it before they are made).
fn mergeable_segments(module: &[u8], left: &mut u64) -> Option<Vec<Segment>> {
    let mut memory64 = Vec::new();
    let mut segments = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.ok()? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if let wasmparser::TypeRef::Memory(ty) = import.ok()?.ty {
                        memory64.push(ty.memory64);
                    }
                }
            }
            Payload::MemorySection(memories) => {
                for memory in memories {
                    memory64.push(memory.ok()?.memory64);
                }
            }
            Payload::DataSection(data) => {
                for segment in data {
                    let segment = segment.ok()?;
                    match segment.kind {
                        DataKind::Passive if segment.data.is_empty() => {}
                        DataKind::Passive => return None,
                        DataKind::Active {
                            memory_index,
                            offset_expr,
                        } => {
                            let offset = match offset_expr.get_operators_reader().read().ok()? {
                                Operator::I32Const { value } => u64::from(value as u32),
                                Operator::I64Const { value } => value as u64,
                                _ => return None,
                            };
                            segments.push(Segment {
                                memory: memory_index,
                                memory64: *memory64.get(memory_index as usize)?,
                                offset,
                                bytes: segment.data.to_vec(),
                            });
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut operators = body.get_operators_reader().ok()?;
                while !operators.eof() {
                    if let Operator::MemoryInit { .. } | Operator::DataDrop { .. } =
                        operators.read().ok()?
                    {
                        return None;
                    }
                }
            }
            _ => {}
        }
    }
    segments.sort_by_key(|s| (s.memory, s.offset));
    let mut take = |bytes: u64| {
        *left = left.checked_sub(bytes)?;
        Some(())
    };
    let mut merged: Vec<Segment> = Vec::with_capacity(segments.len());
    for segment in segments {
        if let Some(last) = merged.last_mut()
            && last.memory == segment.memory
        {
            let end = last.offset.checked_add(last.bytes.len() as u64)?;
            if segment.offset < end {
                // Overlapping segments apply in order; sorting changed it.
                return None;
            }
            let gap = segment.offset - end;
            if gap <= MAX_GAP {
                take(gap + segment.bytes.len() as u64)?;
                last.bytes.resize(last.bytes.len() + gap as usize, 0);
                last.bytes.extend_from_slice(&segment.bytes);
                continue;
            }
        }
        take(segment.bytes.len() as u64)?;
        merged.push(segment);
    }
    Some(merged)
}

/// Given a section's id and body, the body to write instead.
type NewBody<'a> = dyn FnMut(u8, &[u8]) -> Option<Vec<u8>> + 'a;

/// Copies a component or module section by section (after the 8-byte
/// preamble), replacing each section's body with what `section` returns for
/// its id and body; `None` from `section` aborts.
fn rewrite_sections(binary: &[u8], section: &mut NewBody<'_>) -> Option<Vec<u8>> {
    let mut out = binary.get(..8)?.to_vec();
    let mut at = 8;
    while at < binary.len() {
        let id = binary[at];
        let (size, size_len) = read_leb(binary, at + 1)?;
        let start = at + 1 + size_len;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        let body = section(id, binary.get(start..end)?)?;
        out.push(id);
        wasm_encoder::Encode::encode(&(body.len() as u32), &mut out);
        out.extend_from_slice(&body);
        at = end;
    }
    Some(out)
}

/// An unsigned LEB128 at `at`: its value and length in bytes.
fn read_leb(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.get(at..)?.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Engine, Instance, Module, Store};

    /// The first `len` bytes of the memory of `module` once instantiated.
    fn memory_of(module: &[u8], len: usize) -> Vec<u8> {
        let engine = Engine::default();
        let module = Module::new(&engine, module).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        memory.data(&store)[..len].to_vec()
    }

    fn data_segments(module: &[u8]) -> usize {
        Parser::new(0)
            .parse_all(module)
            .filter_map(|p| match p.unwrap() {
                Payload::DataSection(data) => Some(data.count() as usize),
                _ => None,
            })
            .sum()
    }

    #[test]
    fn nearby_segments_merge_and_memory_reads_the_same() {
        let module = wat::parse_str(
            r#"(module
                (memory (export "memory") 4)
                (data (i32.const 70000) "far")
                (data (i32.const 10) "ab")
                (data (i32.const 4000) "cd")
                (data "")
                (func (export "f") (result i32) (i32.load (i32.const 10))))"#,
        )
        .unwrap();
        let compacted = compact_module(&module, &mut { u64::MAX }).unwrap();
        // "ab" and "cd" merge across 3,988 zero bytes; "far" is too far.
        assert_eq!(data_segments(&compacted), 2);
        assert_eq!(memory_of(&compacted, 80_000), memory_of(&module, 80_000));
    }

    #[test]
    fn modules_whose_code_names_a_segment_stay_as_they_are() {
        let module = wat::parse_str(
            r#"(module
                (memory (export "memory") 1)
                (data (i32.const 10) "ab")
                (data (i32.const 20) "cd")
                (func (data.drop 1)))"#,
        )
        .unwrap();
        assert!(compact_module(&module, &mut { u64::MAX }).is_none());
    }

    #[test]
    fn overlapping_segments_stay_in_their_order() {
        let module = wat::parse_str(
            r#"(module
                (memory (export "memory") 1)
                (data (i32.const 20) "late")
                (data (i32.const 10) "early-and-long"))"#,
        )
        .unwrap();
        assert!(compact_module(&module, &mut { u64::MAX }).is_none());
    }

    #[test]
    fn a_component_keeps_everything_but_its_modules_data() {
        let component = wat::parse_str(
            r#"(component
                (core module $m
                    (memory (export "memory") 1)
                    (data (i32.const 10) "ab")
                    (data (i32.const 30) "cd"))
                (core instance (instantiate $m)))"#,
        )
        .unwrap();
        let compacted = compact_component(&component, 64 << 20).unwrap();
        wasmparser::Validator::new()
            .validate_all(&compacted)
            .unwrap();
        assert!(compacted.len() < component.len() + 32);
        assert_ne!(compacted, component);
    }

    /// A module of one-byte segments 64 KiB apart (as one never instantiated
    /// may be) would fill in 64 KiB of zeros per segment: past the budget it
    /// is copied as it was, and the budget is the whole component's.
    #[test]
    fn merged_segments_stay_within_the_budget() {
        let spaced = |count: u64| {
            let data: String = (0..count)
                .map(|i| format!("(data (i32.const {}) \"x\")", i * MAX_GAP))
                .collect();
            format!("(core module (memory 1000) {data})")
        };
        // 100 segments: 6.2 MiB once merged; 2 MiB of memory would not hold them.
        let component = wat::parse_str(format!("(component {})", spaced(100))).unwrap();
        let copied = compact_component(&component, 2 << 20).unwrap();
        assert_eq!(copied, component);
        let compacted = compact_component(&component, 8 << 20).unwrap();
        assert_eq!(data_segments(&compacted), 1);

        // Two such modules under a budget for one: the second stays as it was.
        let two = wat::parse_str(format!("(component {} {})", spaced(100), spaced(100))).unwrap();
        let compacted = compact_component(&two, 8 << 20).unwrap();
        assert_eq!(data_segments(&compacted), 1 + 100);
    }
}
