"""Fetches today's headlines through the host's `http` import and greets the
user with them: "Good morning, Ada! Here are today's top stories."

Config: `api_base` (for example `https://news.example/v2`). Inputs: `first_name`
(text), `topic` (text, default `general`), `limit` (integer, default 3).
Calls `GET {api_base}/headlines?topic={topic}&limit={limit}` with
`Authorization: Bearer {{secret:news_token}}` (the host fills in the secret) and
expects `{"articles": [{"title": ..., "source": ...}, ...]}`.
Outputs: `headlines` (a JSON list of `{title, source}`) and `headline_count`.
"""

import json
from urllib.parse import quote

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, http, log, types


def spec(name: str, kind: types.ValueKind, required: bool, description: str) -> types.AttributeSpec:
    return types.AttributeSpec(name=name, kind=kind, required=required, description=description)


def failure(error: http.HttpError) -> types.ActionError:
    """An `http-error` as the action's own error."""
    if isinstance(error, http.HttpError_Denied):
        return types.ActionError_Denied(error.value)
    if isinstance(error, http.HttpError_Timeout):
        return types.ActionError_Timeout()
    if isinstance(error, (http.HttpError_InvalidRequest, http.HttpError_Transport)):
        return types.ActionError_Upstream(f"the news API failed: {error.value}")
    return types.ActionError_Upstream(f"the news API failed: {type(error).__name__}")


class Action(exports.Action):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="news-py",
            version="0.1.0",
            description="Greets the user with today's headlines",
            inputs=[
                spec("first_name", types.ValueKind.TEXT, False, "The user's first name"),
                spec("topic", types.ValueKind.TEXT, False, "A news topic; general by default"),
                spec("limit", types.ValueKind.INTEGER, False, "How many headlines, 1 to 10; 3 by default"),
            ],
            outputs=[
                spec("headlines", types.ValueKind.JSON, False, "The headlines as a list of {title, source}"),
                spec("headline_count", types.ValueKind.INTEGER, False, "How many headlines were found"),
            ],
            hosts=["https://news.example"],
            config=["api_base"],
        )

    def run(self, ctx: types.Context, input: list[types.Attribute]) -> types.Outcome:
        values = {attribute.name: attribute.value for attribute in input}
        name = values.get("first_name")
        first_name = name.value.split()[0] if isinstance(name, types.Value_Text) and name.value.split() else ""
        topic = values.get("topic")
        topic = topic.value.strip() if isinstance(topic, types.Value_Text) and topic.value.strip() else "general"
        limit = values.get("limit")
        limit = limit.value if isinstance(limit, types.Value_Integer) else 3
        if not 1 <= limit <= 10:
            # Raising Err with an action-error returns it as the `err` case.
            raise Err(types.ActionError_InvalidInput(f"limit must be between 1 and 10, not {limit}"))
        base = config.get("api_base")
        if base is None:
            raise Err(types.ActionError_Internal("the operator has not set `api_base`"))

        request = http.Request(
            method="GET",
            url=f"{base.rstrip('/')}/headlines?topic={quote(topic)}&limit={limit}",
            headers=[("accept", "application/json"), ("authorization", "Bearer {{secret:news_token}}")],
            body=None,
            timeout_ms=2000,
        )
        try:
            response = http.send(request)
        except Err as error:
            raise Err(failure(error.value))
        if response.status != 200:
            raise Err(types.ActionError_Upstream(f"the news API answered {response.status}"))

        # A body that is not JSON raises here, and the host reports `internal`.
        articles = json.loads(response.body)["articles"][:limit]
        headlines = [{"title": a["title"], "source": a.get("source", "")} for a in articles]
        log.log(log.Level.INFO, f"{len(headlines)} headlines on {topic}")

        part = ctx.part_of_day.name.lower()
        hello = "Hello" if part == "night" else f"Good {part}"
        who = f", {first_name}" if first_name else ""
        message = f"{hello}{who}! Here are today's top stories." if headlines else f"{hello}{who}! No news on {topic} today."
        return types.Outcome(
            success=True,
            attributes=[
                types.Attribute(name="headlines", value=types.Value_Json(json.dumps(headlines))),
                types.Attribute(name="headline_count", value=types.Value_Integer(len(headlines))),
            ],
            messages=[message] + [h["title"] for h in headlines],
        )
