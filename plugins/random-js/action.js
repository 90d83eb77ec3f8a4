// A test action: what JavaScript's sources of randomness return in this call.
// Every call is a fresh instance; two calls must not return the same values,
// whatever the host snapshotted at load.
//
// Outputs: `math_random` (Math.random()), `crypto` (8 bytes from
// crypto.getRandomValues, in hex) and `uuid` (crypto.randomUUID()).

function spec(name, kind) {
  return { name, kind, required: false, description: "" };
}

export const action = {
  describe() {
    return {
      name: "random-js",
      version: "0.1.0",
      description: "Reports what JavaScript's sources of randomness return",
      inputs: [],
      outputs: [spec("math_random", "decimal"), spec("crypto", "text"), spec("uuid", "text")],
      hosts: [],
      config: [],
    };
  },

  run() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return {
      success: true,
      attributes: [
        { name: "math_random", value: { tag: "decimal", val: Math.random() } },
        { name: "crypto", value: { tag: "text", val: hex } },
        { name: "uuid", value: { tag: "text", val: crypto.randomUUID() } },
      ],
      messages: [],
    };
  },
};
