//! Components made to need more of the host than the ones built from source:
//! a built component with core instances appended at its top level. The
//! component model instantiates every core instance a component declares, so
//! each appended one takes a core instance (and its memories and tables) from
//! the host's pool on every call, while the component still implements the
//! contract unchanged.

use wasm_encoder::{
    Component, InstanceSection, MemorySection, MemoryType, Module, ModuleSection, RefType,
    TableSection, TableType,
};
use wasmparser::{ComponentAlias, ComponentOuterAliasKind, ComponentTypeRef, Parser, Payload};

/// What each appended core instance defines.
#[derive(Clone, Copy, Default)]
pub struct Extra {
    /// Core instances to append.
    pub instances: u32,
    /// A memory of this many 64 KiB pages in each, or none.
    pub memory_pages: u64,
    /// A table in each.
    pub table: bool,
}

/// `component` with `extra.instances` core instances of one small module
/// appended to its top level.
pub fn padded(component: &[u8], extra: Extra) -> Vec<u8> {
    let mut module = Module::new();
    if extra.memory_pages > 0 {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: extra.memory_pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
    }
    if extra.table {
        let mut tables = TableSection::new();
        tables.table(TableType {
            element_type: RefType::FUNCREF,
            table64: false,
            minimum: 1,
            maximum: None,
            shared: false,
        });
        module.section(&tables);
    }
    let index = core_modules(component);
    let mut sections = Component::new();
    sections.section(&ModuleSection(&module));
    let mut instances = InstanceSection::new();
    for _ in 0..extra.instances {
        instances.instantiate(index, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
    }
    sections.section(&instances);
    let sections = sections.finish();
    // Both start with the same 8-byte preamble; the sections follow it.
    [component, &sections[8..]].concat()
}

/// How many core modules the top level of `component` defines, imports or
/// aliases: the index the next one gets.
fn core_modules(component: &[u8]) -> u32 {
    let mut depth = 0;
    let mut count = 0;
    for payload in Parser::new(0).parse_all(component) {
        match payload.expect("a valid component") {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ModuleSection { .. } if depth == 1 => count += 1,
            Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    if matches!(import.unwrap().ty, ComponentTypeRef::Module(_)) {
                        count += 1;
                    }
                }
            }
            Payload::ComponentAliasSection(aliases) if depth == 1 => {
                for alias in aliases {
                    if matches!(
                        alias.unwrap(),
                        ComponentAlias::Outer {
                            kind: ComponentOuterAliasKind::CoreModule,
                            ..
                        }
                    ) {
                        count += 1;
                    }
                }
            }
            _ => {}
        }
    }
    count
}
