#-----------------------------------------------------------------------------
# Stand-in for Slicer's SlicerExtensionCPack.cmake (see SlicerConfig.cmake in this folder).
#
# Slicer packages the extension here; the stub performs the same sanity checks on the metadata
# (so a configure with the stub fails where packaging would) and leaves packaging out: the
# install tree (cmake --install) is what the package would contain.
#-----------------------------------------------------------------------------

set(_slicer_stub_required
  EXTENSION_NAME
  EXTENSION_HOMEPAGE
  EXTENSION_CATEGORY
  EXTENSION_CONTRIBUTORS
  EXTENSION_DESCRIPTION
  EXTENSION_ICONURL
  EXTENSION_SCREENSHOTURLS
  EXTENSION_DEPENDS
  )
foreach(_slicer_stub_var IN LISTS _slicer_stub_required)
  if("${${_slicer_stub_var}}" STREQUAL "")
    message(FATAL_ERROR "error: ${_slicer_stub_var} is either NOT defined or empty (${CMAKE_SOURCE_DIR}/CMakeLists.txt)")
  endif()
endforeach()

foreach(_slicer_stub_var IN ITEMS EXTENSION_README_FILE EXTENSION_LICENSE_FILE)
  if(DEFINED ${_slicer_stub_var} AND NOT EXISTS "${${_slicer_stub_var}}")
    message(FATAL_ERROR "error: ${_slicer_stub_var} points to an inexistent file: ${${_slicer_stub_var}}")
  endif()
endforeach()

foreach(_slicer_stub_url IN ITEMS ${EXTENSION_HOMEPAGE} ${EXTENSION_ICONURL} ${EXTENSION_SCREENSHOTURLS})
  if(NOT _slicer_stub_url MATCHES "^https?://")
    message(FATAL_ERROR "error: '${_slicer_stub_url}' in the extension metadata is not an http(s) URL")
  endif()
endforeach()

message(STATUS "Extension ${EXTENSION_NAME}: packaging skipped (Slicer CMake stub); run `cmake --install` to get the package tree")
