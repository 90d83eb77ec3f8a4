"""A test action: what Python's sources of randomness return in this call.
Every call is a fresh instance; two calls must not return the same values,
whatever the host snapshotted at load.

Outputs: `random` (random.random()), `uuid4` (uuid.uuid4()) and `token`
(secrets.token_hex(8)).
"""

import random
import secrets
import uuid

from wit_world import exports
from wit_world.imports import types


def spec(name: str, kind: types.ValueKind) -> types.AttributeSpec:
    return types.AttributeSpec(name=name, kind=kind, required=False, description="")


class Action(exports.Action):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="random-py",
            version="0.1.0",
            description="Reports what Python's sources of randomness return",
            inputs=[],
            outputs=[
                spec("random", types.ValueKind.DECIMAL),
                spec("uuid4", types.ValueKind.TEXT),
                spec("token", types.ValueKind.TEXT),
            ],
            hosts=[],
            config=[],
        )

    def run(self, ctx: types.Context, input: list[types.Attribute]) -> types.Outcome:
        return types.Outcome(
            success=True,
            attributes=[
                types.Attribute(name="random", value=types.Value_Decimal(random.random())),
                types.Attribute(name="uuid4", value=types.Value_Text(str(uuid.uuid4()))),
                types.Attribute(name="token", value=types.Value_Text(secrets.token_hex(8))),
            ],
            messages=[],
        )
