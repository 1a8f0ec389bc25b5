"""One program that uses LangChain, LiteLLM and LlamaIndex, with no caching code in it.
Under the launcher, all three are cached from one store:

    stratacache run -- python examples/auto/all_three.py
"""

from __future__ import annotations

import os

import litellm
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

NOTES = [
    "Incident 12: the checkout service timed out because the price cache was cold.",
    "Incident 17: a bad deploy flushed the session cache and logins spiked.",
    "Incident 23: the search cache served stale results for six hours.",
]


def triage_with_langchain(note: str) -> str:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Classify the incident severity as low, medium or high."), ("human", "{note}")]
    )
    chain = prompt | ChatOpenAI(model="gpt-4o-mini", temperature=0) | StrOutputParser()
    return chain.invoke({"note": note})


def summarise_with_litellm(note: str) -> str:
    response = litellm.completion(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": f"Summarise in five words: {note}"}],
        temperature=0,
    )
    return response.choices[0].message.content


def ask_with_llamaindex(question: str) -> str:
    base_url = os.environ.get("OPENAI_BASE_URL")
    Settings.llm = OpenAI(model="gpt-4o-mini", temperature=0, api_base=base_url)
    Settings.embed_model = OpenAIEmbedding(model="text-embedding-3-small", api_base=base_url)
    index = VectorStoreIndex.from_documents([Document(text=note) for note in NOTES])
    return str(index.as_query_engine(similarity_top_k=1).query(question))


def main() -> None:
    for note in NOTES:
        print(f"severity: {triage_with_langchain(note)}")
        print(f"summary: {summarise_with_litellm(note)}")
    print(f"answer: {ask_with_llamaindex('Which incident involved stale results?')}")
    print(f"answer: {ask_with_llamaindex('Which incident involved stale results?')}")


if __name__ == "__main__":
    main()
