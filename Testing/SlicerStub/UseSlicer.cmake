#-----------------------------------------------------------------------------
# Stand-in for Slicer's UseSlicer.cmake (see SlicerConfig.cmake in this folder).
#
# Provides the two macros a scripted extension calls, with Slicer's argument checks and install
# layout, and nothing else:
#   slicerMacroBuildScriptedModule(NAME n SCRIPTS ... [RESOURCES ...] [WITH_SUBDIR] [WITH_GENERIC_TESTS])
#   slicer_add_python_unittest(SCRIPT s [SLICER_ARGS ...] [TESTNAME_PREFIX p])
#-----------------------------------------------------------------------------

if(NOT DEFINED EXTENSION_NAME)
  set(EXTENSION_NAME "${PROJECT_NAME}")
endif()
if(NOT DEFINED EXTENSION_BUILD_SUBDIRECTORY)
  set(EXTENSION_BUILD_SUBDIRECTORY ".")
endif()
if(NOT DEFINED EXTENSION_ENABLED)
  set(EXTENSION_ENABLED 1)
endif()

option(BUILD_TESTING "Build the testing tree." ON)

# Checks that each entry of a SCRIPTS/RESOURCES list names an existing file inside the module
# folder, and returns (in out_var) "<absolute source>|<path relative to the module folder>" pairs.
# Missing files are collected in the caller's _slicer_stub_missing list; every problem of one
# module is reported together.
function(_slicer_stub_resolve_files module_name kind out_var)
  set(resolved)
  set(missing ${_slicer_stub_missing})
  set(seen)
  foreach(value IN LISTS ARGN)
    if(kind STREQUAL "SCRIPTS")
      # Like Slicer, a script may be listed without its .py extension.
      get_filename_component(ext "${value}" EXT)
      if(NOT ext MATCHES "py$")
        set(value "${value}.py")
      endif()
    endif()
    if(IS_ABSOLUTE "${value}")
      set(abs "${value}")
    else()
      set(abs "${CMAKE_CURRENT_SOURCE_DIR}/${value}")
    endif()
    get_filename_component(abs "${abs}" ABSOLUTE)
    file(RELATIVE_PATH rel "${CMAKE_CURRENT_SOURCE_DIR}" "${abs}")
    if(rel MATCHES "^\\.\\./" OR IS_ABSOLUTE "${rel}")
      message(FATAL_ERROR
        "slicerMacroBuildScriptedModule(NAME ${module_name}) ${kind}: '${value}' is outside the module "
        "folder ${CMAKE_CURRENT_SOURCE_DIR}; list files relative to it")
    endif()
    if(rel IN_LIST seen)
      message(FATAL_ERROR
        "slicerMacroBuildScriptedModule(NAME ${module_name}) ${kind}: '${rel}' is listed twice in "
        "${CMAKE_CURRENT_LIST_FILE}")
    endif()
    list(APPEND seen "${rel}")
    if(NOT EXISTS "${abs}" OR IS_DIRECTORY "${abs}")
      list(APPEND missing "${kind} ${rel} (${abs})")
    else()
      list(APPEND resolved "${abs}|${rel}")
    endif()
  endforeach()
  set(${out_var} "${resolved}" PARENT_SCOPE)
  set(_slicer_stub_missing "${missing}" PARENT_SCOPE)
endfunction()

macro(slicerMacroBuildScriptedModule)
  set(options WITH_GENERIC_TESTS WITH_SUBDIR VERBOSE)
  set(oneValueArgs NAME)
  set(multiValueArgs SCRIPTS RESOURCES)
  cmake_parse_arguments(MY_SLICER "${options}" "${oneValueArgs}" "${multiValueArgs}" ${ARGN})

  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR
      "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT DEFINED MY_SLICER_NAME)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule(): NAME is mandatory (${CMAKE_CURRENT_LIST_FILE})")
  endif()
  if(NOT MY_SLICER_SCRIPTS)
    message(FATAL_ERROR
      "slicerMacroBuildScriptedModule(NAME ${MY_SLICER_NAME}): SCRIPTS is empty (${CMAKE_CURRENT_LIST_FILE})")
  endif()
  if(NOT Slicer_USE_PYTHONQT)
    message(FATAL_ERROR
      "Attempting to build the Python scripted module '${MY_SLICER_NAME}' when Slicer_USE_PYTHONQT is OFF")
  endif()
  message(STATUS "Configuring Scripted module: ${MY_SLICER_NAME}")

  set(_slicer_stub_missing)
  _slicer_stub_resolve_files(${MY_SLICER_NAME} SCRIPTS _slicer_stub_scripts ${MY_SLICER_SCRIPTS})
  _slicer_stub_resolve_files(${MY_SLICER_NAME} RESOURCES _slicer_stub_resources ${MY_SLICER_RESOURCES})
  if(_slicer_stub_missing)
    string(REPLACE ";" "\n  " _slicer_stub_missing_text "${_slicer_stub_missing}")
    message(FATAL_ERROR
      "slicerMacroBuildScriptedModule(NAME ${MY_SLICER_NAME}) in ${CMAKE_CURRENT_LIST_FILE} "
      "given nonexistent file(s):\n  ${_slicer_stub_missing_text}\n"
      "Restore the file(s) or remove them from the list.")
  endif()

  # Slicer (ctkMacroCompilePythonScript) keeps each file's path relative to the module folder;
  # WITH_SUBDIR puts everything under a folder named like the module's source folder.
  set(_slicer_stub_subdir "")
  if(MY_SLICER_WITH_SUBDIR)
    get_filename_component(_slicer_stub_subdir "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
    set(_slicer_stub_subdir "/${_slicer_stub_subdir}")
  endif()
  foreach(_slicer_stub_pair IN LISTS _slicer_stub_scripts _slicer_stub_resources)
    string(REPLACE "|" ";" _slicer_stub_pair "${_slicer_stub_pair}")
    list(GET _slicer_stub_pair 0 _slicer_stub_abs)
    list(GET _slicer_stub_pair 1 _slicer_stub_rel)
    get_filename_component(_slicer_stub_reldir "${_slicer_stub_rel}" DIRECTORY)
    set(_slicer_stub_dest "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}${_slicer_stub_subdir}")
    if(_slicer_stub_reldir)
      set(_slicer_stub_dest "${_slicer_stub_dest}/${_slicer_stub_reldir}")
    endif()
    install(FILES "${_slicer_stub_abs}" DESTINATION "${_slicer_stub_dest}" COMPONENT RuntimeLibraries)
  endforeach()

  if(MY_SLICER_VERBOSE)
    message(STATUS "  scripts: ${MY_SLICER_SCRIPTS}")
    message(STATUS "  resources: ${MY_SLICER_RESOURCES}")
  endif()
endmacro()

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicer_add_python_unittest(): \"${MY_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT MY_SCRIPT)
    message(FATAL_ERROR "slicer_add_python_unittest(): SCRIPT is mandatory (${CMAKE_CURRENT_LIST_FILE})")
  endif()
  if(NOT IS_ABSOLUTE "${MY_SCRIPT}")
    set(MY_SCRIPT "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
  endif()
  if(NOT EXISTS "${MY_SCRIPT}")
    message(FATAL_ERROR
      "slicer_add_python_unittest() in ${CMAKE_CURRENT_LIST_FILE} given nonexistent script '${MY_SCRIPT}'")
  endif()
  # The test itself needs the Slicer application; the stub only checks the declaration.
endfunction()
