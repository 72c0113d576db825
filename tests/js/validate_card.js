// Parses Adaptive Cards with the reference parser (npm "adaptivecards") and prints, as JSON,
// the problems it reports for each card: parse events (unknown types, invalid values) and
// property validation. Input on stdin: a JSON array of card objects (the "content" of a message).
const AC = require("adaptivecards/dist/adaptivecards.js");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((json) => {
    const card = new AC.AdaptiveCard();
    const context = new AC.SerializationContext();
    card.parse(json, context);
    const problems = [];
    for (let i = 0; i < context.eventCount; i++) problems.push(context.getEventAt(i).message);
    for (const e of card.validateProperties().validationEvents) problems.push(e.message);
    return { version: card.version ? card.version.toString() : null, problems };
  });
  process.stdout.write(JSON.stringify(results));
});
