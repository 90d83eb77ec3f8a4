// A test action: posts a body with `fetch()`, as an action that sends what
// the user gave to a CRM does, through wasi:http and the host's gate.
//
// Input: `url` (required text) and `size` (the body's length in bytes).
// Output: `status` (the upstream's HTTP status) and `answer` (its body).

function spec(name, kind, required) {
  return { name, kind, required, description: "" };
}

function attribute(input, name) {
  const found = input.find((a) => a.name === name);
  return found ? found.value.val : undefined;
}

export const action = {
  describe() {
    return {
      name: "post-js",
      version: "0.1.0",
      description: "Posts a body of a given size with fetch()",
      inputs: [spec("url", "text", true), spec("size", "integer", false)],
      outputs: [spec("status", "integer", false), spec("answer", "text", false)],
      hosts: [],
      config: [],
    };
  },

  async run(ctx, input) {
    const size = Number(attribute(input, "size") ?? 0);
    const response = await fetch(attribute(input, "url"), {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "x".repeat(size),
    });
    return {
      success: true,
      attributes: [
        { name: "status", value: { tag: "integer", val: BigInt(response.status) } },
        { name: "answer", value: { tag: "text", val: await response.text() } },
      ],
      messages: [],
    };
  },
};
