// Tells the user the current weather in a city, with `fetch()`. fetch goes
// through wasi:http, so the host applies the same grants, secrets and limits
// as to the `http` import; `run` is async and the host waits for its promise.
//
// Config: `api_base` (for example `https://weather.example/v1`). Input: `city`
// (required text). Calls `GET {api_base}/current?city={city}` with
// `x-api-key: {{secret:weather_key}}` (the host fills in the secret) and
// expects `{"city", "condition", "temperature_c", "wind_kph"}`.
// Outputs: `weather_summary` (text) and `weather` (the API's answer, as JSON).

import { get as config } from "webhook:action/config@0.1.0";

function spec(name, kind, required, description) {
  return { name, kind, required, description };
}

function text(input, name) {
  const attribute = input.find((a) => a.name === name);
  return attribute && attribute.value.tag === "text" ? attribute.value.val.trim() : "";
}

export const action = {
  describe() {
    return {
      name: "weather-js",
      version: "0.1.0",
      description: "Summarizes the current weather in a city",
      inputs: [spec("city", "text", true, "The city, for example Lisbon")],
      outputs: [
        spec("weather_summary", "text", false, "One sentence about the weather"),
        spec("weather", "json", false, "The weather API's answer"),
      ],
      hosts: ["https://weather.example"],
      config: ["api_base"],
    };
  },

  async run(ctx, input) {
    const city = text(input, "city");
    if (!city) {
      throw { tag: "invalid-input", val: "city is empty" };
    }
    const base = config("api_base");
    if (!base) {
      throw { tag: "internal", val: "the operator has not set `api_base`" };
    }
    const url = `${base.replace(/\/+$/, "")}/current?city=${encodeURIComponent(city)}`;
    let response;
    try {
      response = await fetch(url, {
        headers: { accept: "application/json", "x-api-key": "{{secret:weather_key}}" },
      });
    } catch (error) {
      // A refusal by the host's grants arrives as a rejected fetch whose
      // message carries wasi:http's error code.
      const why = String(error && error.message ? error.message : error);
      throw /denied/i.test(why) ? { tag: "denied", val: why } : { tag: "upstream", val: why };
    }
    if (response.status === 404) {
      const sorry = `I don't know the weather in ${city}.`;
      return { success: false, attributes: [], messages: [sorry] };
    }
    if (!response.ok) {
      throw { tag: "upstream", val: `the weather API answered ${response.status}` };
    }
    // Invalid JSON from the API throws here; the host reports it as `internal`.
    const weather = await response.json();
    const summary =
      `${weather.condition[0].toUpperCase()}${weather.condition.slice(1)} and ` +
      `${Math.round(weather.temperature_c)} °C in ${weather.city}.`;
    return {
      success: true,
      attributes: [
        { name: "weather_summary", value: { tag: "text", val: summary } },
        { name: "weather", value: { tag: "json", val: JSON.stringify(weather) } },
      ],
      messages: [summary],
    };
  },
};
