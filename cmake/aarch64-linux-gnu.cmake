# Cross-compile for 64-bit Arm Linux (Debian: gcc-aarch64-linux-gnu); ctest runs the tests under qemu-aarch64
# user mode when it is installed (Debian: qemu-user).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
find_program(METAEDGE_QEMU_AARCH64 qemu-aarch64)
if(METAEDGE_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${METAEDGE_QEMU_AARCH64} -L /usr/aarch64-linux-gnu)
endif()
