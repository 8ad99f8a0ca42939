/* Minimal Cortex-M4 start-up for the example on qemu's mps2-an386 board: vector table, FPU on, .data/.bss set
 * up, semihosting I/O (newlib's librdimon), then main and exit (semihosting SYS_EXIT ends qemu). */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
extern void initialise_monitor_handles(void);
void reset_handler(void);
void default_handler(void);

void _init(void);
void _fini(void);
void _init(void) {} /* newlib's init/fini arrays call these; nothing to do without crt0 */
void _fini(void) {}

void default_handler(void)
{
    for (;;) {
    }
}

void reset_handler(void)
{
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: full access to CP10/CP11 (the FPU) */
    __asm volatile("dsb\n\tisb");
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0u;
    initialise_monitor_handles();
    exit(main());
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, reset_handler, default_handler, default_handler, default_handler,
    default_handler, default_handler, 0, 0, 0, 0, default_handler, default_handler, 0, default_handler,
    default_handler,
};
