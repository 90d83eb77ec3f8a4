// Looks up the user's membership with the host's `http` import, so the
// conversation can offer member perks: "You're a gold member since 2021."
//
// Config: `api_base` (for example `https://members.example/api`). Input:
// `user_id` (text; the context's user id when absent). Calls
// `GET {api_base}/members/{user_id}` with `Authorization: Bearer {{secret:members_token}}`
// (the host fills in the secret) and expects `{"tier": ..., "since": ...}`.
// Outputs: `is_member` (boolean), `membership_tier` (text), `member_since` (text).

import { send } from "webhook:action/http@0.1.0";
import { get as config } from "webhook:action/config@0.1.0";
import { log } from "webhook:action/log@0.1.0";

function spec(name, kind, required, description) {
  return { name, kind, required, description };
}

function text(input, name) {
  const attribute = input.find((a) => a.name === name);
  return attribute && attribute.value.tag === "text" ? attribute.value.val.trim() : "";
}

/** An `http-error` (a `{ tag, val }` variant) as the action's own error. */
function failure(error) {
  switch (error.tag) {
    case "denied":
      return { tag: "denied", val: error.val };
    case "timeout":
      return { tag: "timeout" };
    case "budget-exhausted":
      return { tag: "internal", val: "out of outbound requests" };
    case "too-large":
      return { tag: "upstream", val: "the membership API's answer was too large" };
    default:
      return { tag: "upstream", val: `the membership API failed: ${error.val}` };
  }
}

export const action = {
  describe() {
    return {
      name: "membership-js",
      version: "0.1.0",
      description: "Looks up the user's membership tier",
      inputs: [spec("user_id", "text", false, "Whose membership; the context's user by default")],
      outputs: [
        spec("is_member", "boolean", false, "Whether the user is a member"),
        spec("membership_tier", "text", false, "The tier, for example gold"),
        spec("member_since", "text", false, "The date the membership began"),
      ],
      hosts: ["https://members.example"],
      config: ["api_base"],
    };
  },

  run(ctx, input) {
    const user = text(input, "user_id") || ctx.userId;
    if (!user) {
      throw { tag: "invalid-input", val: "no user_id in the input or the context" };
    }
    const base = config("api_base");
    if (!base) {
      throw { tag: "internal", val: "the operator has not set `api_base`" };
    }
    let response;
    try {
      response = send({
        method: "GET",
        url: `${base.replace(/\/+$/, "")}/members/${encodeURIComponent(user)}`,
        headers: [
          ["accept", "application/json"],
          ["authorization", "Bearer {{secret:members_token}}"],
        ],
        body: undefined,
        timeoutMs: 2000,
      });
    } catch (error) {
      // A `result` import throws its `err` case; the variant is the payload.
      throw failure(error.payload ?? { tag: "transport", val: String(error) });
    }
    if (response.status === 404) {
      return {
        success: true,
        attributes: [{ name: "is_member", value: { tag: "boolean", val: false } }],
        messages: [],
      };
    }
    if (response.status !== 200) {
      throw { tag: "upstream", val: `the membership API answered ${response.status}` };
    }
    const member = JSON.parse(new TextDecoder().decode(response.body));
    log("info", `${user} is a ${member.tier} member`);
    return {
      success: true,
      attributes: [
        { name: "is_member", value: { tag: "boolean", val: true } },
        { name: "membership_tier", value: { tag: "text", val: String(member.tier) } },
        { name: "member_since", value: { tag: "text", val: String(member.since) } },
      ],
      messages: [`You're a ${member.tier} member since ${member.since}.`],
    };
  },
};
