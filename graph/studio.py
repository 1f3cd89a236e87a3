"""The graph `langgraph.json` points at, for `langgraph dev` / LangGraph Studio.

Compiled without a checkpointer: the LangGraph server attaches its own. Settings come from the
environment, as for `keel serve`.
"""

from graph.builder import build_graph
from graph.deps import Deps
from graph.settings import Settings

graph = build_graph(Deps.from_settings(Settings()))
