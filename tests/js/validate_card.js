// Parses Adaptive Cards with the reference parser (npm "adaptivecards") and prints, as JSON, what
// it reports for each card. Input on stdin: a JSON array of cards, or of Teams messages (the card
// is then taken from attachments[0].content).
//
// Output, one entry per card: {version, errors, warnings, problems}
//   errors:   parse events (unknown element/action type, invalid property value, unsupported
//             version) and validateProperties() events other than hints/deprecations, plus a
//             card version above MAX_VERSION (what Teams renders everywhere).
//   warnings: validateProperties() hints and deprecations.
//   problems: errors followed by warnings (kept for older callers).
//
// Action.Submit and Action.Execute are removed from the action registry used for parsing, so
// the parser itself reports them as unknown: a Workflows webhook cannot receive a submit.
//
// The UMD build is loaded on purpose: the package's "main" (lib/) is extensionless ESM that
// node cannot load. Parsing and validation need no DOM (rendering would).
const AC = require("adaptivecards/dist/adaptivecards.js");

const MAX_VERSION = "1.5";
const WARNING_EVENTS = new Set([AC.ValidationEvent.Hint, AC.ValidationEvent.Deprecated]);

function actionRegistry() {
  const registry = new AC.CardObjectRegistry();
  AC.GlobalRegistry.populateWithDefaultActions(registry);
  registry.unregister("Action.Submit");
  registry.unregister("Action.Execute");
  return registry;
}

function cardOf(item) {
  if (item && item.type === "message" && Array.isArray(item.attachments)) {
    return item.attachments[0] ? item.attachments[0].content : null;
  }
  return item;
}

function check(item) {
  const json = cardOf(item);
  const errors = [];
  const warnings = [];
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  context.setActionRegistry(actionRegistry());
  card.parse(json, context);
  for (let i = 0; i < context.eventCount; i++) errors.push(context.getEventAt(i).message);
  for (const e of card.validateProperties().validationEvents) {
    (WARNING_EVENTS.has(e.event) ? warnings : errors).push(e.message);
  }
  const declared = json && typeof json.version === "string" ? json.version : null;
  const max = AC.Version.parse(MAX_VERSION, context);
  const version = declared ? AC.Version.parse(declared, context) : null;
  if (!version || !version.isValid) errors.push(`Missing or invalid card version ${JSON.stringify(declared)}.`);
  else if (version.compareTo(max) > 0) errors.push(`Card version ${declared} is above ${MAX_VERSION}.`);
  return { version: declared, errors, warnings, problems: [...errors, ...warnings] };
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(check);
  process.stdout.write(JSON.stringify(results));
});
