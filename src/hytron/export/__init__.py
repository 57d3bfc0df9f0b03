"""Export: hytron / Nemotron-H model directories to the files other runtimes load (GGUF for llama.cpp)."""
