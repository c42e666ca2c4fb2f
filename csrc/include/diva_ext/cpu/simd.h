// CPU code generation for the epilogue loops.
//
// The extension is compiled for baseline x86-64 (SSE2); the epilogues (square roots, logs,
// selects over a whole row) gain 2-4x from AVX2/AVX-512. DIVA_CPU_CLONES asks the compiler for
// one clone per instruction set, picked once at load time by the CPU that runs it. Put it on
// non-template functions (GCC does not clone templates) that call an inline template body.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DIVA_CUDA_EMULATION)
#define DIVA_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DIVA_CPU_CLONES
#endif

#if defined(__GNUC__)
#define DIVA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DIVA_ALWAYS_INLINE inline
#endif
