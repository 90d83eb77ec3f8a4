// The personalization example in JavaScript, the same action as the Rust
// `greeting`: greets the user by first name and part of day, and mentions
// their membership when the input says they have one.
//
// Inputs: `first_name` (required text), `is_member` (boolean), `membership_tier`
// (text). Outputs: `greeting` and `part_of_day`.

/** Finds the input attribute `name` and returns its value (`{ tag, val }`). */
function valueOf(input, name) {
  const attribute = input.find((a) => a.name === name);
  return attribute ? attribute.value : { tag: "null" };
}

/**
 * The first word of `text`: what comes before its first whitespace character.
 * Written without a regular expression: a fresh instance pays for a regular
 * expression's first use on every call (BENCHMARKS.md).
 */
function firstWord(text) {
  const trimmed = text.trim();
  for (let i = 0; i < trimmed.length; i++) {
    // `trim()` strips exactly the characters that `\s` matches.
    if (trimmed[i].trim() === "") return trimmed.slice(0, i);
  }
  return trimmed;
}

function spec(name, kind, required, description) {
  return { name, kind, required, description };
}

export const action = {
  describe() {
    return {
      name: "greeting-js",
      version: "0.1.0",
      description: "Greets the user by first name and part of day, and mentions their membership",
      inputs: [
        spec("first_name", "text", true, "The user's first name (or full name)"),
        spec("is_member", "boolean", false, "Whether the user is a member"),
        spec("membership_tier", "text", false, "The member's tier, for example gold"),
      ],
      outputs: [
        spec("greeting", "text", false, "The greeting to say"),
        spec("part_of_day", "text", false, "morning, afternoon, evening or night"),
      ],
      hosts: [],
      config: [],
    };
  },

  run(ctx, input) {
    const fullName = valueOf(input, "first_name");
    // "Ada Lovelace" greets as "Ada": people are greeted by their first name.
    const name = fullName.tag === "text" ? firstWord(fullName.val) : "";
    if (!name) {
      // Throwing a variant of action-error returns it as the `err` case.
      throw { tag: "invalid-input", val: "first_name is empty" };
    }
    const part = ctx.partOfDay;
    let greeting = `${part === "night" ? "Hello" : `Good ${part}`}, ${name}!`;
    const member = valueOf(input, "is_member");
    if (member.tag === "boolean" && member.val) {
      const tier = valueOf(input, "membership_tier");
      greeting +=
        tier.tag === "text" && tier.val.trim()
          ? ` Thanks for being a ${tier.val.trim()} member.`
          : " Thanks for being a member.";
    }
    return {
      success: true,
      attributes: [
        { name: "greeting", value: { tag: "text", val: greeting } },
        { name: "part_of_day", value: { tag: "text", val: part } },
      ],
      messages: [greeting],
    };
  },
};

// One call while the component is built: componentize-js snapshots the engine
// after this module runs, so `run` and the functions it calls are compiled
// once here instead of on every call (each call is a fresh instance).
// `run` is pure, so the call leaves nothing behind but compiled code.
action.run({ partOfDay: "morning" }, [
  { name: "first_name", value: { tag: "text", val: "Ada Lovelace" } },
  { name: "is_member", value: { tag: "boolean", val: true } },
  { name: "membership_tier", value: { tag: "text", val: "gold" } },
]);
