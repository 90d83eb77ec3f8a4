"""The personalization example in Python, the same action as the Rust
`greeting`: greets the user by first name and part of day, and mentions their
membership when the input says they have one.

Inputs: `first_name` (required text), `is_member` (boolean), `membership_tier`
(text). Outputs: `greeting` and `part_of_day`.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types


def spec(name: str, kind: types.ValueKind, required: bool, description: str) -> types.AttributeSpec:
    return types.AttributeSpec(name=name, kind=kind, required=required, description=description)


class Action(exports.Action):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="greeting-py",
            version="0.1.0",
            description="Greets the user by first name and part of day, and mentions their membership",
            inputs=[
                spec("first_name", types.ValueKind.TEXT, True, "The user's first name (or full name)"),
                spec("is_member", types.ValueKind.BOOLEAN, False, "Whether the user is a member"),
                spec("membership_tier", types.ValueKind.TEXT, False, "The member's tier, for example gold"),
            ],
            outputs=[
                spec("greeting", types.ValueKind.TEXT, False, "The greeting to say"),
                spec("part_of_day", types.ValueKind.TEXT, False, "morning, afternoon, evening or night"),
            ],
            hosts=[],
            config=[],
        )

    def run(self, ctx: types.Context, input: list[types.Attribute]) -> types.Outcome:
        values = {attribute.name: attribute.value for attribute in input}
        full_name = values.get("first_name")
        # "Ada Lovelace" greets as "Ada": people are greeted by their first name.
        words = full_name.value.split() if isinstance(full_name, types.Value_Text) else []
        if not words:
            # Raising Err with an action-error returns it as the `err` case.
            raise Err(types.ActionError_InvalidInput("first_name is empty"))
        part = ctx.part_of_day.name.lower()
        greeting = f"{'Hello' if part == 'night' else f'Good {part}'}, {words[0]}!"
        member = values.get("is_member")
        if isinstance(member, types.Value_Boolean) and member.value:
            tier = values.get("membership_tier")
            if isinstance(tier, types.Value_Text) and tier.value.strip():
                greeting += f" Thanks for being a {tier.value.strip()} member."
            else:
                greeting += " Thanks for being a member."
        return types.Outcome(
            success=True,
            attributes=[
                types.Attribute(name="greeting", value=types.Value_Text(greeting)),
                types.Attribute(name="part_of_day", value=types.Value_Text(part)),
            ],
            messages=[greeting],
        )
