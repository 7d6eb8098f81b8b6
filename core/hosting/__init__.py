"""Where the app runs, beside what it does: a Hugging Face Space's persistent disk and the Hub
backup of the library (`sync`, `sync_state`), and ZeroGPU's lent GPU (`zerogpu`). Nothing below
core/hosting imports it: the library, the models and the services work the same off a Space,
and the one fact they need (CUDA only inside model calls on ZeroGPU) is `Runtime.zero_gpu`,
decided with the device in core/settings.py."""
