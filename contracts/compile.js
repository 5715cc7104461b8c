// Compile contracts/ChronicleAnchors.sol with the pinned solc-js (contracts/package.json) into
// the checked-in artifact contracts/ChronicleAnchors.json: {abi, bytecode, deployedBytecode,
// compiler, settings}. Deterministic: fixed settings, no metadata hash, sorted keys.
//
//   node contracts/compile.js [--check]      (NODE_PATH must reach solc: `make contracts`)
//
// --check compiles and compares with the checked-in artifact instead of writing it (exit 1
// and the first differing field if they differ).
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const NAME = "ChronicleAnchors";
const dir = __dirname;
const source = fs.readFileSync(path.join(dir, NAME + ".sol"), "utf8");
const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};
const input = { language: "Solidity", sources: { [NAME + ".sol"]: { content: source } }, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const c = output.contracts[NAME + ".sol"][NAME];
const artifact = {
  abi: c.abi,
  bytecode: "0x" + c.evm.bytecode.object,
  compiler: "solc-js " + solc.version(),
  contract: NAME,
  deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  settings: { evmVersion: settings.evmVersion, metadata: settings.metadata, optimizer: settings.optimizer },
};
const text = JSON.stringify(artifact, null, 1) + "\n";
const out = path.join(dir, NAME + ".json");
if (process.argv.includes("--check")) {
  const have = fs.readFileSync(out, "utf8");
  if (have !== text) {
    const a = JSON.parse(have);
    const diff = Object.keys(artifact).find((k) => JSON.stringify(a[k]) !== JSON.stringify(artifact[k]));
    console.error(`${out}: differs from a fresh compile (field ${diff}); run: make contracts`);
    process.exit(1);
  }
  console.log(`${out}: identical to a fresh compile with ${artifact.compiler}`);
} else {
  fs.writeFileSync(out, text);
  console.log(`wrote ${out} (${artifact.compiler})`);
}
