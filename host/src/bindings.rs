//! The one `bindgen!` of the host, generated from the contract in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        // Outbound HTTP waits on the network, so it must not block a worker.
        "webhook:action/http.send": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub(crate) use webhook::action::types;
