// The words a person types to find a node (each node's `search_aliases`, sent with its definition) in the editor's
// node search. Frontends that search aliases themselves rank a node whose alias equals the query as an exact name
// match; for those that do not (1.32.x), this puts such nodes first, the way an exact name is ranked.
import { app } from "../../../scripts/app.js";

const aliases = new Map(); // node type -> its aliases, lower case

function nodeDefStore() {
  const pinia = document.querySelector("#vue-app")?.__vue_app__?.config?.globalProperties?.$pinia;
  return pinia?._s?.get("nodeDef");
}

function withAliases(searchNode, store) {
  return function (query, filters = [], options, extra = {}) {
    const found = searchNode.call(this, query, filters, undefined, extra);
    const typed = (query ?? "").trim().toLowerCase();
    const wildcard = (extra.matchWildcards ?? true) ? "*" : undefined;
    const exact = (def) => [def.name, def.display_name].some((n) => n?.toLowerCase() === typed);
    const named = [...aliases]
      .filter(([, words]) => words.includes(typed))
      .map(([name]) => store.nodeDefsByName[name])
      .filter((def) => def && !def.deprecated && filters.every((f) => f.filterDef.matches(def, f.value, { wildcard })));
    const rest = found.filter((def) => !named.includes(def));
    const results = [...rest.filter(exact), ...named, ...rest.filter((def) => !exact(def))];
    return options?.limit ? results.slice(0, options.limit) : results;
  };
}

app.registerExtension({
  name: "TuneAVideo.SearchAliases",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.search_aliases?.length) aliases.set(nodeData.name, nodeData.search_aliases.map((a) => a.toLowerCase()));
  },
  setup() {
    const store = nodeDefStore();
    const service = store?.nodeSearchService;
    const searched = service?.nodeFuseSearch?.keys?.map((key) => key.name ?? key) ?? [];
    if (!service?.searchNode || searched.includes("search_aliases")) return; // other editors; native aliases
    const prototype = Object.getPrototypeOf(service);
    if (!prototype.searchNode.tavAliases) {
      prototype.searchNode = withAliases(prototype.searchNode, store);
      prototype.searchNode.tavAliases = true;
    }
  },
});
