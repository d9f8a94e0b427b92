// The Workers runtime's own limit for scripts/bench edge: a Worker that answers every request at
// once with an empty 200, run through the same harness (tests/cloudflare/mf-serve.mjs) and
// loaded the same way as the registry.
export default {
  async fetch() {
    return new Response(null, { status: 200, headers: { "content-length": "0" } });
  },
};
